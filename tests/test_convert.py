"""Conversion: every variant is real, carries its metadata and computes what Keras does."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from hemalite.cli import main

from hemalite.convert import export
from hemalite.edge.runtime import load_model
from hemalite.train import data
from tests.helpers import cli_defaults_differing

pytestmark = [pytest.mark.slow, pytest.mark.tensorflow]


def pixels_of(run_dir: Path, split: str):
    run = export.load_run(run_dir)
    x, y, _ = data.load_pixels(run.data_dir, run.samples(split), run.spec, progress=False)
    return run, x, y


def test_float32_matches_keras(tiny_run, tiny_tflite):
    run, x, _ = pixels_of(tiny_run, "test")
    reference = run.model.predict(x.astype("float32"), verbose=0)
    model = load_model(tiny_tflite["float32"])
    probs = model.predict_batch(x)
    np.testing.assert_allclose(probs, reference, atol=1e-4)


def test_int8_agrees_with_float_on_separable_data(tiny_run, tiny_tflite):
    run, x, y = pixels_of(tiny_run, "train")
    reference = run.model.predict(x.astype("float32"), verbose=0)
    assert (reference.argmax(1) == y).mean() == 1.0  # the tiny model separates the colours
    model = load_model(tiny_tflite["int8"])
    probs = model.predict_batch(x)
    assert (probs.argmax(1) == reference.argmax(1)).mean() >= 0.95


def test_int8_io_types_and_quantisation(tiny_tflite):
    model = load_model(tiny_tflite["int8"])
    inp, out = model.input_details, model.output_details
    assert inp["dtype"] == np.uint8 and out["dtype"] == np.uint8
    scale, zero_point = inp["quantization"]
    assert scale == pytest.approx(1.0, rel=0.02) and zero_point == 0  # raw camera pixels
    assert out["quantization"][0] == pytest.approx(1 / 256, rel=0.01)
    details = model.interpreter.get_tensor_details()
    floats = [d["name"] for d in details if d["dtype"] == np.float32]
    assert not floats, f"float tensors left in the int8 model: {floats[:5]}"


def test_variant_sizes_shrink(tiny_tflite):
    size = {v: os.path.getsize(p) for v, p in tiny_tflite.items()}
    assert size["float16"] < 0.6 * size["float32"]
    assert size["int8"] < 0.4 * size["float32"] and size["dynamic"] < 0.4 * size["float32"]


def test_int8_with_int8_io(tiny_run, tmp_path):
    result = export.convert(export.ConvertConfig(run_dir=str(tiny_run), variants=("int8",),
                                             io="int8", calib_size=16, out=str(tmp_path),
                                             threshold=0.0))
    model = load_model(result["paths"]["int8"])
    assert model.input_details["dtype"] == np.int8
    assert model.input_details["quantization"][1] == -128


def test_metadata_round_trips_through_the_edge_reader_without_tensorflow(tiny_tflite):
    script = f"""
import sys, json
from hemalite.edge.runtime import load_model
m = load_model({str(tiny_tflite['int8'])!r})
print(json.dumps({{"labels": m.info.labels, "h": m.info.spec.height, "w": m.info.spec.width,
    "mean": m.info.mean, "std": m.info.std, "desc": m.info.description,
    "tf": "tensorflow" in sys.modules, "calib": m.info.extra.get("calibration")}}))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["labels"] == ["blue", "green", "red"] and (info["h"], info["w"]) == (32, 32)
    assert (info["mean"], info["std"]) == (127.5, 127.5)
    assert "doi:10.34740/KAGGLE/DSV/2175623" in info["desc"] and "not a diagnosis" in info["desc"]
    assert info["tf"] is False
    assert info["calib"]["source"] == "training split"


def test_convert_options_default_to_the_config():
    from hemalite.convert.cli import convert_command

    assert cli_defaults_differing(convert_command, export.ConvertConfig) == {}
    assert export.ConvertConfig.variants == export.VARIANTS  # no variant flag: every variant


def test_converted_metadata_decodes_with_the_generated_reader(tiny_tflite):
    """Every output is described, probability first with its labels; domain.json and
    case.json are packed."""
    from hemalite.metadata import find_metadata_buffer
    from hemalite.third_party import metadata_schema as schema

    for path in tiny_tflite.values():
        root = schema.ModelMetadata.GetRootAs(find_metadata_buffer(path.read_bytes()), 0)
        subgraph = root.SubgraphMetadata(0)
        outputs = [subgraph.OutputTensorMetadata(i)
                   for i in range(subgraph.OutputTensorMetadataLength())]
        assert [o.Name() for o in outputs] == [b"probability", b"domain", b"cam", b"embedding"]
        labels = outputs[0].AssociatedFiles(0)
        assert (labels.Name(), labels.Type()) == (b"labels.txt",
                                                  schema.AssociatedFileType.TENSOR_AXIS_LABELS)
        assert [root.AssociatedFiles(i).Name() for i in range(root.AssociatedFilesLength())] == [
            b"hemalite.json", b"domain.json", b"case.json"]


def test_representative_data_come_from_the_training_split_only(tiny_run):
    run = export.load_run(tiny_run)
    cfg = export.ConvertConfig(run_dir=str(tiny_run), calib_size=10_000, calib_jitter=0.0)
    calib, info = export.calibration_images(run, cfg)
    train_x, _, _ = data.load_pixels(run.data_dir, run.samples("train"), run.spec, False)
    test_x, _, _ = data.load_pixels(run.data_dir, run.samples("test"), run.spec, False)
    assert len(calib) == len(train_x) and info["source"] == "training split"
    key = {img.tobytes() for img in train_x}
    assert all(img.tobytes() in key for img in calib)
    assert not any(img.tobytes() in {c.tobytes() for c in calib} for img in test_x)
    small = export.stratified(run.samples("train"), 6, seed=0)
    assert sorted({s.label for s in small}) == [0, 1, 2]


def test_calibration_jitter_changes_the_chosen_share_of_training_images(tiny_run):
    run = export.load_run(tiny_run)
    clean, _ = export.calibration_images(run, export.ConvertConfig(run_dir=str(tiny_run),
                                                                   calib_jitter=0.0))
    calib, info = export.calibration_images(run, export.ConvertConfig(run_dir=str(tiny_run)))
    assert info["jittered"] == round(export.ConvertConfig.calib_jitter * len(calib)) > 0
    changed = sum(a.tobytes() != b.tobytes() for a, b in zip(clean, calib))
    assert 0 < changed <= info["jittered"]  # a draw may leave an image as it was
    assert calib.shape == clean.shape and calib.dtype == np.uint8
    with pytest.raises(export.ConvertError, match="between 0 and 1"):
        export.jitter_share(clean, 1.5, seed=0)


def test_convert_cli_prints_the_verification_table(tiny_run, tmp_path):
    result = CliRunner().invoke(main, ["convert", str(tiny_run), "--float32", "--dynamic",
                                       "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "| float32 |" in result.output and "| dynamic |" in result.output
    rows = json.loads((tmp_path / "verification.json").read_text())["rows"]
    assert {r["variant"] for r in rows} == {"keras", "float32", "dynamic"}
    assert json.loads((tmp_path / "convert_config.json").read_text())["variants"] == \
        ["float32", "dynamic"]
    later = CliRunner().invoke(main, ["convert", str(tiny_run), "--float16", "--out",
                                      str(tmp_path)])
    assert later.exit_code == 0, later.output
    rows = json.loads((tmp_path / "verification.json").read_text())["rows"]
    assert [r["variant"] for r in rows] == ["keras", "float32", "float16", "dynamic"]
    assert all(r["split"] == "val" and r["n"] > 0 for r in rows)


def test_int8_below_threshold_fails_unless_forced(tiny_run, tmp_path):
    args = ["convert", str(tiny_run), "--int8", "--calib-size", "8", "--threshold", "1.01",
            "--out", str(tmp_path)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and "below --threshold" in result.output
    assert not (tmp_path / "model_int8.tflite").exists()
    forced = CliRunner().invoke(main, args + ["--force"])
    assert forced.exit_code == 0 and (tmp_path / "model_int8.tflite").exists()


def test_bad_inputs_each_get_one_clear_message(tiny_run, tmp_path):
    runner = CliRunner()
    empty = tmp_path / "empty_run"
    empty.mkdir()
    r = runner.invoke(main, ["convert", str(empty)])
    assert r.exit_code == 2 and "has no model.keras" in r.output
    corrupt = tmp_path / "corrupt_run"
    corrupt.mkdir()
    (corrupt / "model.keras").write_bytes(b"PK\x03\x04 not really a zip")
    r = runner.invoke(main, ["convert", str(corrupt)])
    assert r.exit_code == 2 and "corrupt or unreadable" in r.output
    calib = tmp_path / "calib"
    calib.mkdir()
    r = runner.invoke(main, ["convert", str(tiny_run), "--int8", "--calib-dir", str(calib),
                             "--out", str(tmp_path / "o1")])
    assert r.exit_code == 2 and "has no images" in r.output
    (calib / "bad.png").write_bytes(b"garbage")
    from PIL import Image
    Image.new("RGB", (40, 40), (200, 30, 30)).save(calib / "good.png")
    r = runner.invoke(main, ["convert", str(tiny_run), "--int8", "--calib-dir", str(calib),
                             "--out", str(tmp_path / "o2"), "--force"])
    assert r.exit_code == 0 and "(1 skipped, 0 jittered)" in r.output  # half of 1, rounded
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    r = runner.invoke(main, ["convert", str(tiny_run), "--float32", "--out", str(locked / "x")])
    if os.geteuid() != 0:  # root writes anywhere; the message is checked for other users
        assert r.exit_code == 2 and "cannot write" in r.output
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    r = runner.invoke(main, ["convert", str(tiny_run), "--float32", "--out", str(not_a_dir)])
    assert r.exit_code == 2 and "cannot write" in r.output


def test_quantisation_study_runs_as_a_hemalite_subcommand(tiny_run, tmp_path):
    result = CliRunner().invoke(main, ["study", str(tiny_run), "--out", str(tmp_path),
                                       "--debug-images", "4"])
    assert result.exit_code == 0, result.output
    study = json.loads((tmp_path / "study.json").read_text())
    assert len(study["rows"]) == 10 and study["worst_layers"]
    assert study["rows"][0]["setting"].endswith("(default)")  # what convert does, first
    assert all(0 <= r["agreement_all"] <= 1 for r in study["rows"])
    per_tensor = next(r for r in study["rows"] if "per-tensor" in r["setting"])
    assert per_tensor["input_quantisation"][0] == "uint8"
    assert (tmp_path / "layer_stats.csv").is_file() and (tmp_path / "study.md").is_file()


def test_labels_with_spaces_survive_train_convert_and_the_edge(tmp_path):
    from tests.helpers import TINY_SIZE, make_dataset

    data_dir = make_dataset(tmp_path / "data", per_class=12,
                            colours={"class A": (210, 40, 40), "b-2": (40, 60, 200)})
    run = tmp_path / "run"
    trained = CliRunner().invoke(main, [
        "train", str(data_dir), "--out", str(run), "--weights", "none", "--alpha", "0.35",
        "--image-size", str(TINY_SIZE), "--epochs", "1", "--batch-size", "8", "--no-ground",
        "--no-acquisition", "--no-progress"])
    assert trained.exit_code == 0, trained.output
    converted = CliRunner().invoke(main, ["convert", str(run), "--float32"])
    assert converted.exit_code == 0, converted.output
    model = load_model(run / "tflite" / "model_float32.tflite")
    assert model.info.labels == ("b-2", "class A")


def test_an_untrained_model_converts_to_int8_without_a_domain_check(tmp_path):
    """A barely trained model's features do not vary; whitening them once made an int8 graph
    that aborted LiteRT's XNNPACK delegate (double free). Subprocesses: an abort would take
    pytest down."""
    from tests.helpers import make_dataset

    make_dataset(tmp_path / "data")
    hemalite = [str(Path(sys.executable).parent / "hemalite")]
    train = subprocess.run(hemalite + [
        "train", str(tmp_path / "data"), "--out", str(tmp_path / "run"), "--weights", "none",
        "--alpha", "0.35", "--image-size", "32", "--epochs", "1", "--no-ground",
        "--no-acquisition", "--no-augment", "--no-progress"], capture_output=True, text=True,
        timeout=600)
    assert train.returncode == 0, train.stderr[-2000:]
    done = subprocess.run(hemalite + ["convert", str(tmp_path / "run"), "--int8",
                                      "--calib-size", "16", "--threshold", "0"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "no domain check" in done.stderr
    code = ("import sys, numpy as np; from hemalite.edge.runtime import load_model; "
            "m = load_model(sys.argv[1]); print(m.domain, m.has_output('cam'), "
            "m.predict(np.zeros((32, 32, 3), np.uint8)).shape)")
    run = subprocess.run([sys.executable, "-c", code,
                          str(tmp_path / "run" / "tflite" / "model_int8.tflite")],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split() == ["None", "False", "(3,)"]
