"""Where does int8 lose accuracy? A reproducible study of calibration and quantisation choices.

    hemalite study RUN_DIR [--out RUN_DIR/quant_study]

For each setting it converts a full-integer model and measures its top-1 agreement with the
Keras float model on every image of the run (train + val + test: agreement needs no labels
and ~2600 images resolve 0.04 points, where the 259-image test split resolves 0.4), plus test
accuracy. It also dumps TensorFlow's per-layer QuantizationDebugger statistics for the
default setting. The results table is written as Markdown and JSON.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import click
import numpy as np

from hemalite import DISCLAIMER
from hemalite.cli import Command
from hemalite.convert import export
from hemalite.files import write_json, write_text
from hemalite.metadata import embed_metadata
from hemalite.train import data


def flips(x: np.ndarray) -> np.ndarray:
    """Calibration views: each image, mirrored and rotated 90 degrees (dihedral views)."""
    return np.concatenate([x, x[:, :, ::-1], np.rot90(x, 1, axes=(1, 2))])


def int8_probabilities(run: export.Run, flat: bytes, x: np.ndarray, folder: str) -> np.ndarray:
    """Run a freshly converted model through the edge runtime, as `convert` verifies."""
    from hemalite.edge.runtime import load_model

    path = Path(folder, "study_int8.tflite")
    path.write_bytes(embed_metadata(flat, export.model_info(run, "int8", None)))
    return load_model(path).predict_batch(x)


def study_settings(calib) -> list[tuple[str, dict]]:
    """(name, convert_variant keywords) of every setting; `calib(n, seed, views, jitter)`
    draws that many stratified training images (`jitter` of them through training's
    acquisition jitter, as `hemalite convert --calib-jitter`)."""
    return [
        ("300 train images, half jittered (default)", dict(calib=calib(300))),
        ("300 train images, none jittered", dict(calib=calib(300, jitter=0.0))),
        ("100 train images", dict(calib=calib(100))),
        ("1000 train images", dict(calib=calib(1000))),
        ("all 2087 train images", dict(calib=calib(10_000))),
        ("300 images, other random draw", dict(calib=calib(300, seed=1))),
        ("300 images x 3 views (flip, rot90)", dict(calib=calib(300, views=True))),
        ("300 images, per-tensor weights", dict(calib=calib(300), per_channel=False)),
        ("300 images, float32 I/O", dict(calib=calib(300), io="float32")),
        ("300 images, input range not pinned", dict(calib=calib(300), pin=False)),
    ]


@click.command("study", cls=Command, epilog=DISCLAIMER)
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True))
@click.option("--out", default="", help="Folder for study.md / study.json [RUN_DIR/quant_study]")
@click.option("--debug-images", type=int, default=64, show_default=True,
              help="Images for the per-layer QuantizationDebugger.")
def study_command(run_dir, out, debug_images):
    """Where int8 loses accuracy: convert RUN_DIR with each calibration and quantisation
    setting and measure its top-1 agreement with the Keras model on every image of the run.

    Writes study.md, study.json and layer_stats.csv (QuantizationDebugger) to --out.
    """
    run = export.load_run(run_dir)
    out = Path(out or Path(run_dir, "quant_study"))
    out.mkdir(parents=True, exist_ok=True)
    splits = {s: data.load_pixels(run.data_dir, run.samples(s), run.spec, progress=False)[:2]
              for s in data.SPLITS}
    x_all = np.concatenate([splits[s][0] for s in data.SPLITS])
    test = slice(len(x_all) - len(splits["test"][0]), len(x_all))
    reference = run.model.predict(x_all.astype(np.float32), batch_size=32, verbose=0)
    train_samples = run.samples("train")

    def calib(n: int, seed: int = 0, views: bool = False,
              jitter: float = export.ConvertConfig.calib_jitter) -> np.ndarray:
        picked = export.stratified(train_samples, n, seed)
        x, _, _ = data.load_pixels(run.data_dir, picked, run.spec, progress=False)
        export.jitter_share(x, jitter, seed)
        return flips(x) if views else x

    settings = study_settings(calib)
    with tempfile.TemporaryDirectory() as tmp:
        # the probability output alone, named as `convert` names it (metadata expects it)
        export.export_saved_model(export.export_model(run.model), tmp)
        rows = [study_row(run, tmp, name, kw, x_all, reference, test, splits["test"][1])
                for name, kw in settings]
        debug_layers(tmp, settings[0][1]["calib"], debug_images, out / "layer_stats.csv")
    worst = _worst_layers(out / "layer_stats.csv")
    write_json(out / "study.json", {"n_images": int(len(x_all)), "rows": rows,
                                    "worst_layers": worst})
    write_text(out / "study.md", _markdown(rows, worst, len(x_all)))
    click.echo(_markdown(rows, worst, len(x_all)))


def study_row(run: export.Run, saved_model: str, name: str, kw: dict, x_all: np.ndarray,
              reference: np.ndarray, test: slice, y_test: np.ndarray) -> dict:
    """Convert one setting to int8, run it on every image and compare it with Keras."""
    start = time.time()
    flat = export.convert_variant(saved_model, "int8", kw["calib"], kw.get("io", "uint8"),
                                  kw.get("per_channel", True), kw.get("pin", True))
    probs = int8_probabilities(run, flat, x_all, saved_model)
    agree = probs.argmax(1) == reference.argmax(1)
    float_acc = float((reference[test].argmax(1) == y_test).mean())
    row = {"setting": name, "calibration_images": int(len(kw["calib"])),
           "agreement_all": float(agree.mean()), "disagreements_all": int((~agree).sum()),
           "agreement_test": float(agree[test].mean()),
           "test_accuracy": float((probs[test].argmax(1) == y_test).mean()),
           "float_test_accuracy": float_acc,
           "max_abs_diff": float(np.abs(probs - reference).max()),
           "input_quantisation": _input_quantisation(flat),
           "bytes": len(flat), "seconds": round(time.time() - start, 1)}
    click.echo(f"{name}: agreement {row['agreement_all']:.4f} "
               f"({row['disagreements_all']} of {len(x_all)}), test accuracy "
               f"{row['test_accuracy']:.4f} (float {float_acc:.4f})")
    return row


def debug_layers(saved_model: str, calib: np.ndarray, n: int, path: Path) -> None:
    """TensorFlow's QuantizationDebugger per-layer statistics of the default int8 setting,
    on the first `n` calibration images."""
    import tensorflow as tf

    debug_x = calib[:n]
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=export.make_converter(saved_model, "int8", calib),
        debug_dataset=lambda: ([img[None].astype(np.float32)] for img in debug_x))
    debugger.run()
    with open(path, "w") as fh:
        debugger.layer_statistics_dump(fh)


def _input_quantisation(flat: bytes) -> list:
    from hemalite.edge.runtime import load_runtime

    interp = load_runtime()[0](model_content=flat)
    d = interp.get_input_details()[0]
    return [str(np.dtype(d["dtype"])), float(d["quantization"][0]), int(d["quantization"][1])]


def _short(tensor: str) -> str:
    """'.../block_16_project_BN_1/batchnorm/add_1;...' -> 'block_16_project_BN'."""
    parts = tensor.split(";")[0].split("/")
    name = next((p for p in parts if p.startswith(("block_", "Conv", "expanded", "out_relu"))),
                parts[-1])
    return name.removesuffix("_1")


def _worst_layers(path: Path, k: int = 8) -> list[dict]:
    import csv

    rows = list(csv.DictReader(open(path)))
    for r in rows:
        r["rmse/scale"] = float(r["mean_squared_error"]) ** 0.5 / float(r["scale"]) \
            if float(r.get("scale") or 0) else 0.0
    rows.sort(key=lambda r: -r["rmse/scale"])
    return [{"tensor": _short(r["tensor_name"]), "op": r["op_name"],
             "rmse/scale": r["rmse/scale"]}
            for r in rows[:k]]


def _markdown(rows, worst, n) -> str:
    lines = [f"Top-1 agreement of full-integer int8 with the Keras float model on all {n} images "
             "of the run, and test-split accuracy.", "",
             "| calibration / setting | images | agreement (all) | disagreements | "
             "test accuracy (float) | max abs prob diff | input (dtype, scale, zero point) |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['setting']} | {r['calibration_images']} | {r['agreement_all']:.4f} | "
                     f"{r['disagreements_all']} | {r['test_accuracy']:.4f} "
                     f"({r['float_test_accuracy']:.4f}) | {r['max_abs_diff']:.3f} | "
                     f"{r['input_quantisation'][0]}, {r['input_quantisation'][1]:.4f}, "
                     f"{r['input_quantisation'][2]} |")
    lines += ["", "Layers with the largest quantisation error (QuantizationDebugger, "
              "RMSE / scale; 0.29 is pure rounding noise):", "",
              "| tensor | op | RMSE/scale |", "|---|---|---:|"]
    lines += [f"| {w['tensor']} | {w['op']} | {w['rmse/scale']:.3f} |" for w in worst]
    return "\n".join(lines) + "\n"

