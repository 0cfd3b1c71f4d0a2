"""`hemalite sweep`: configurations trained with one recipe and one split, converted,
benchmarked and audited with `hemalite bench`'s harness, and compared on one front.

Each configuration is a run directory under the sweep's folder (`size288`,
`size256_from_block_6_expand`, ...) holding the run, its `tflite/` (float32 and int8) and its
bench report on the **validation** split (`bench_val/`): the test split stays out of the
choice. Every step is skipped when its output is already there, so an interrupted sweep
resumes where it stopped. The summary (sweep.md, sweep.json, sweep.png) sets accuracy as is,
the audit's mean and worst shift and the erased-leukocyte accuracy against int8 latency and
size, with the Pareto front marked. Needs the train and bench extras (TensorFlow).
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hemalite.benchmarks.audit import is_shift
from hemalite.files import read_json, write_json, write_text

log = logging.getLogger(__name__)
DEFAULT_BOUNDARY = "block_2_expand"
ERASED = "leukocytes erased"


@dataclass(frozen=True)
class SweepConfig:
    """What a sweep compares; saved as sweep_config.json beside its report.

    sizes            the input sides tried (the backbone sees this size: no resize inside)
    boundaries       the first backbone layer fine-tuned (`hemalite train --fine-tune-from`)
    weights          ImageNet weights: 'imagenet' (Keras's download) or a local .weights.h5
    fine_tune_epochs the recipe's fine-tuning epochs, the same for every configuration
    split            the split configurations are compared on: validation, never test
    runs, warmup     timed and warm-up invokes per latency figure
    teacher, distill with a teacher run: every configuration is trained twice, as is and
                     distilled from it (`hemalite train --teacher --distill`, `_distilled`)
    """

    data_dir: str
    out: str = "runs/sweep"
    sizes: tuple[int, ...] = (224, 256, 288)
    boundaries: tuple[str, ...] = (DEFAULT_BOUNDARY,)
    weights: str = "imagenet"
    fine_tune_epochs: int = 10
    split: str = "val"
    runs: int = 50
    warmup: int = 5
    teacher: str | None = None
    distill: float = 0.5


def configurations(cfg: SweepConfig) -> dict[str, object]:
    """{name: TrainConfig} of every size x boundary, each in its own run directory."""
    from hemalite.train.fit import TrainConfig

    out = {}
    for size in cfg.sizes:
        for boundary in cfg.boundaries:
            name = f"size{size}" + ("" if boundary == DEFAULT_BOUNDARY else f"_from_{boundary}")
            for suffix, teacher in (("", None), ("_distilled", cfg.teacher)):
                if suffix and not teacher:
                    continue
                out[name + suffix] = TrainConfig(
                    data_dir=cfg.data_dir, out=str(Path(cfg.out, name + suffix)),
                    weights=cfg.weights, image_size=size,
                    fine_tune_epochs=cfg.fine_tune_epochs, fine_tune_from=boundary,
                    teacher=teacher, progress=False,
                    # a plain run keeps the default, so --distill does not rename its options
                    **({"distill": cfg.distill} if teacher else {}))
    return out


def run_configuration(name: str, train_cfg, cfg: SweepConfig) -> dict:
    """Train, convert and bench one configuration (each step only if not done yet)."""
    from hemalite.convert.export import ConvertConfig, convert
    from hemalite.train.fit import train

    run = Path(train_cfg.out)
    metrics = train(train_cfg)
    tflite = run / "tflite"
    files = [tflite / f"model_{v}.tflite" for v in ("float32", "int8")]
    if not all(f.is_file() for f in files) or not (tflite / "verification.json").is_file():
        log.info("%s: converting", name)
        convert(ConvertConfig(run_dir=str(run), variants=("float32", "int8")))
    report = run / f"bench_{cfg.split}" / "report.json"
    if not report.is_file():
        log.info("%s: benchmarking on the %s split", name, cfg.split)
        bench(files, run / "splits" / f"{cfg.split}.csv", cfg.data_dir, report.parent, cfg)
    return summarise(name, train_cfg, metrics, read_json(report))


def bench(models: list[Path], manifest: Path, data_root: str, out: Path,
          cfg: SweepConfig) -> None:
    """`hemalite bench`'s harness: the same measurements, audit and report files."""
    from hemalite.benchmarks.inputs import load_images
    from hemalite.benchmarks.report import run_benchmark, write_report

    paths = [str(m) for m in models]
    x, y, files, labels, source = load_images(paths, None, str(manifest), data_root, 0)
    report = run_benchmark(paths, x, y, files, labels, (1, 2), cfg.runs, cfg.warmup, source,
                           progress=False, audit=True)
    write_report(report, out)


def summarise(name: str, train_cfg, metrics: dict, report: dict) -> dict:
    """One row of the sweep: the int8 model's accuracy, audit and cost, float32's latency."""
    rows = {r["variant"]: r for r in report["models"]}
    int8, fp32 = rows["int8"], rows["float32"]
    audit = int8["audit"]
    shifted = [v["accuracy"] for k, v in audit.items() if is_shift(k)]
    return {"name": name, "size": train_cfg.image_size, "boundary": train_cfg.fine_tune_from,
            "train_s": metrics.get("seconds"), "int8_bytes": int8["bytes"],
            "int8_ms_1t": int8["latency"]["1"]["p50_ms"],
            "int8_ms_2t": int8["latency"]["2"]["p50_ms"],
            "float32_ms_1t": fp32["latency"]["1"]["p50_ms"],
            "int8_speedup_1t": fp32["latency"]["1"]["p50_ms"] / int8["latency"]["1"]["p50_ms"],
            "images_per_s": int8["end_to_end"]["images_per_s"],
            "as_is": audit["as is"]["accuracy"], "shift_mean": float(np.mean(shifted)),
            "shift_worst": float(np.min(shifted)), "erased": audit[ERASED]["accuracy"],
            "erased_referred": sum(audit[ERASED]["referred"].values()) / audit[ERASED]["images"]}


def pareto(rows: list[dict], cost: str = "int8_ms_1t",
           gains: tuple[str, ...] = ("as_is", "shift_mean", "shift_worst")) -> list[bool]:
    """True for each row no other row beats: as cheap or cheaper and at least as good on
    every gain, better on one."""
    def dominates(a, b):
        no_worse = a[cost] <= b[cost] and all(a[g] >= b[g] for g in gains)
        return no_worse and (a[cost] < b[cost] or any(a[g] > b[g] for g in gains))
    return [not any(dominates(other, row) for other in rows if other is not row)
            for row in rows]


def markdown(rows: list[dict], cfg: SweepConfig, machine: str) -> str:
    lines = [f"# hemalite sweep: {len(rows)} configurations, compared on the {cfg.split} split",
             "", f"Every configuration: `hemalite train` with --fine-tune-epochs "
             f"{cfg.fine_tune_epochs} and the weights {cfg.weights}"
             + (f" (`_distilled`: also --teacher {cfg.teacher} --distill {cfg.distill})"
                if cfg.teacher else "")
             + ", then `hemalite convert` "
             "(float32, int8) and `hemalite bench`'s harness with its audit on the same "
             f"split. Latency: median of {cfg.runs} invokes"
             + (", each the median of three side-by-side rounds (`--retime`)"
                if rows and rows[0].get("retimed") else
                ", from each configuration's own bench (which may have shared the CPU with "
                "the next configuration's training: `--retime` measures them side by side)")
             + f"; images/s: decode, preprocess and invoke of 100 images, 2 threads; "
             f"{machine.rstrip('.')}. Accuracy of the "
             "int8 model's best guess (a REFER counts by its best guess here). "
             "Front: no other configuration is as fast and at least as accurate as is, on "
             "the audit's mean and on its worst shift.", "",
             "| configuration | front | int8 ms (1 / 2 threads) | float32 ms (1 thread) | "
             "int8 speed-up | images/s | int8 MB | as is | audit mean | worst shift | "
             "erased (referred) | training |",
             "|---|:-:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row, front in zip(rows, pareto(rows)):
        lines.append(
            f"| {row['name']} | {'*' if front else ''} | {row['int8_ms_1t']:.2f} / "
            f"{row['int8_ms_2t']:.2f} | {row['float32_ms_1t']:.2f} | "
            f"{row['int8_speedup_1t']:.2f}x | {row['images_per_s']:.0f} | "
            f"{row['int8_bytes'] / 1e6:.2f} | {row['as_is']:.1%} | {row['shift_mean']:.1%} | "
            f"{row['shift_worst']:.1%} | {row['erased']:.1%} ({row['erased_referred']:.0%}) | "
            f"{(row['train_s'] or 0) / 60:.0f} min |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    front = pareto(rows)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for key, marker in (("as_is", "o"), ("shift_mean", "s"), ("shift_worst", "v")):
        for ax, cost, unit in ((axes[0], "int8_ms_1t", "int8 invoke, 1 thread (ms)"),
                               (axes[1], "int8_bytes", "int8 file (bytes)")):
            xs = [r[cost] for r in rows]
            ax.scatter(xs, [100 * r[key] for r in rows], marker=marker, label=key.replace("_", " "),
                       facecolors=["C3" if f else "none" for f in front], edgecolors="C0")
            for r in rows:
                ax.annotate(r["name"], (r[cost], 100 * r[key]), fontsize=6)
            ax.set_xlabel(unit)
            ax.set_ylabel("accuracy (%)")
    axes[0].legend(title="filled: on the front")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def retime(rows: list[dict], cfg: SweepConfig, rounds: int = 3) -> None:
    """Re-measure every configuration's invoke latency side by side: the files alternate,
    `rounds` times, and each figure is the median of its rounds (one configuration's bench
    may have shared the CPU with the next one's training; these do not)."""
    import csv

    from hemalite.benchmarks.measure import end_to_end, invoke_latency
    from hemalite.contract import load_image, preprocess
    from hemalite.edge.runtime import load_model

    first = Path(cfg.data_dir)
    image = load_image(sorted(p for p in first.rglob("*") if p.suffix.lower() == ".jpg")[0])
    with open(Path(cfg.out, rows[0]["name"], "splits", f"{cfg.split}.csv"), newline="") as fh:
        files = [str(Path(cfg.data_dir, r["path"])) for r in csv.DictReader(fh)][:100]
    times: dict = {}
    for _ in range(rounds):
        for row in rows:
            path = str(Path(cfg.out, row["name"], "tflite", "model_int8.tflite"))
            times.setdefault((row["name"], "e2e"), []).append(
                end_to_end(path, files, 2)["images_per_s"])
            for variant in ("int8", "float32"):
                path = str(Path(cfg.out, row["name"], "tflite", f"model_{variant}.tflite"))
                pixels = preprocess(image, load_model(path).info.spec)
                for threads in (1, 2):
                    times.setdefault((row["name"], variant, threads), []).append(
                        invoke_latency(path, threads, cfg.runs, cfg.warmup, pixels)["p50_ms"])
    for row in rows:
        row["int8_ms_1t"] = float(np.median(times[(row["name"], "int8", 1)]))
        row["int8_ms_2t"] = float(np.median(times[(row["name"], "int8", 2)]))
        row["float32_ms_1t"] = float(np.median(times[(row["name"], "float32", 1)]))
        row["int8_speedup_1t"] = row["float32_ms_1t"] / row["int8_ms_1t"]
        row["images_per_s"] = float(np.median(times[(row["name"], "e2e")]))
        row["retimed"] = True


def run_sweep(cfg: SweepConfig, retime_all: bool = False) -> list[dict]:
    """Every configuration in turn, then the summary files; returns the rows. With
    `retime_all`, the latencies are measured again, side by side, at the end."""
    from hemalite.benchmarks.measure import machine_info
    from hemalite.benchmarks.report import machine_line

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "sweep_config.json", dataclasses.asdict(cfg))
    rows = []
    for name, train_cfg in configurations(cfg).items():
        log.info("configuration %s", name)
        rows.append(run_configuration(name, train_cfg, cfg))
        write_json(out / "sweep.json", {"config": dataclasses.asdict(cfg), "rows": rows,
                                        "front": pareto(rows)})
    if retime_all:
        retime(rows, cfg)
        write_json(out / "sweep.json", {"config": dataclasses.asdict(cfg), "rows": rows,
                                        "front": pareto(rows)})
    write_text(out / "sweep.md", markdown(rows, cfg, machine_line(machine_info())))
    plot(rows, out / "sweep.png")
    return rows
