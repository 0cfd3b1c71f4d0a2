"""`hemalite bench`, `edge-bench` and `hemalite report merge`."""
from __future__ import annotations

import dataclasses
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import click

from hemalite import DISCLAIMER, __version__
from hemalite.benchmarks.inputs import BenchError, collect, load_images
from hemalite.benchmarks.sweep import SweepConfig, run_sweep
from hemalite.cli import Command, Group, setup_logging


class ThreadCounts(click.ParamType):
    """Comma-separated thread counts, each at least 1 ('1,2')."""

    name = "N[,N...]"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            counts = tuple(int(v) for v in str(value).split(","))
        except ValueError:
            self.fail(f"{value!r} is not a comma-separated list of whole numbers", param, ctx)
        if min(counts) < 1:
            self.fail(f"{value!r}: a thread count is at least 1", param, ctx)
        return counts


@dataclass(frozen=True)
class BenchConfig:
    """What a benchmark was asked to do; saved as bench_config.json beside its report."""

    targets: tuple[str, ...] = ()
    data_dir: str | None = None
    manifest: str | None = None
    data_root: str | None = None
    out: str = "bench"
    threads: tuple[int, ...] = (1, 2)
    runs: int = 50
    warmup: int = 5
    limit: int = 0  # 0: every image
    audit: bool = True
    keras_too: bool = False  # also the run's Keras model (hemalite bench with TensorFlow)
    other_labs: tuple[str, ...] = ()  # folders of another lab's photographs (never a class)


def bench_options(run: bool):
    """Options shared by `hemalite bench` and `edge-bench` (one definition, one behaviour);
    `run` says whether the command's help may speak of a run directory."""
    root_help = ("Folder the manifest's paths start from  [default: the run's data folder]"
                 if run else "Folder the manifest's paths start from (needed with --manifest).")
    options = [
        click.argument("targets", nargs=-1, required=True),
        click.option("--data", "data_dir", type=click.Path(file_okay=False),
                     help="Class-folder dataset to measure on (all its images)."),
        click.option("--manifest", type=click.Path(dir_okay=False),
                     help="CSV manifest with a 'path' column (e.g. a run's splits/test.csv)."),
        click.option("--data-root", default=None, help=root_help),
        click.option("--out", default=BenchConfig.out, show_default=True, help="Report folder."),
        click.option("--threads", type=ThreadCounts(), show_default=True,
                     default=",".join(map(str, BenchConfig.threads)),
                     help="Thread counts for invoke latency, comma-separated."),
        click.option("--runs", type=click.IntRange(min=1), default=BenchConfig.runs,
                     show_default=True,
                     help="Timed invokes."),
        click.option("--warmup", type=click.IntRange(min=0), default=BenchConfig.warmup,
                     show_default=True,
                     help="Warm-up invokes."),
        click.option("--limit", type=click.IntRange(min=0), default=BenchConfig.limit,
                     help="Use at most N images (0 = all)."),
        click.option("--audit/--no-audit", default=BenchConfig.audit, show_default=True,
                     help="Also audit each .tflite: accuracy under another lab's shifts, with "
                          "the leukocytes erased or alone, and where its heatmap looks."),
        click.option("--other-lab", "other_labs", multiple=True,
                     type=click.Path(file_okay=False, exists=True),
                     help="A folder of another lab's smear photographs, out-of-domain material "
                          "for the domain check (how many referred, why, how many called "
                          "malignant); repeatable. E.g. ../shared/data/other_labs/bccd/images."),
        click.option("--progress/--no-progress", default=True, show_default=True),
        click.option("--verbose", is_flag=True),
    ]

    def decorate(fn):
        for option in reversed(options):
            fn = option(fn)
        return fn
    return decorate


def _run(targets, data_dir, manifest, data_root, out, threads, runs, warmup, limit, progress,
         verbose, keras_too, audit=True, other_labs=()):
    setup_logging(verbose)
    if importlib.util.find_spec("sklearn") is None:
        raise BenchError("benchmarks need the bench extra: pip install 'hemalite[bench]'")
    from hemalite.benchmarks.report import headline, run_benchmark, write_report
    from hemalite.files import native_noise_filtered, write_json

    if keras_too:
        with native_noise_filtered():  # TensorFlow's start-up lines
            import keras  # noqa: F401
    models, _, manifest, data_root = collect(targets, data_dir, manifest, data_root, keras_too)
    x, y, files, labels, source = load_images(models, data_dir, manifest, data_root, limit)
    report = run_benchmark(models, x, y, files, labels, threads, runs, warmup, source,
                           progress, audit, other_labs)
    written = write_report(report, out)
    config = BenchConfig(tuple(targets), data_dir, manifest, data_root, out, tuple(threads),
                         runs, warmup, limit, audit, keras_too, tuple(other_labs))
    write_json(Path(out) / "bench_config.json",
               {**dataclasses.asdict(config), "hemalite": __version__})
    written.append(Path(out) / "bench_config.json")
    click.echo(headline(report))
    click.echo("wrote " + ", ".join(str(p) for p in written))


@click.command("bench", cls=Command, epilog=DISCLAIMER)
@bench_options(run=True)
def bench_command(**kw):
    """Benchmark models: TARGETS are run directories or .tflite / .keras files.

    For a run directory: every RUN_DIR/tflite/*.tflite and the Keras model, on the run's
    test split. Measures size, invoke latency per thread count, end-to-end images/s,
    cold start, peak memory and accuracy (drop versus float32). Writes report.json,
    report.md and PNG plots to --out.
    """
    _run(keras_too=importlib.util.find_spec("tensorflow") is not None, **kw)


@click.command("edge-bench", cls=Command, epilog=DISCLAIMER)
@click.version_option(__version__, prog_name="edge-bench")
@bench_options(run=False)
def edge_bench_command(**kw):
    """On the device: benchmark .tflite models with the edge install (no TensorFlow).

    Same measurements and report format as `hemalite bench`; plots only when matplotlib
    is installed. Merge reports from several machines with `hemalite report merge`.
    """
    _run(keras_too=False, **kw)


@click.group("report", cls=Group)
def report_group():
    """Work with benchmark reports."""


@report_group.command("merge")
@click.argument("reports", nargs=-1, required=True, type=click.Path(dir_okay=False, exists=True))
@click.option("--out", default="bench/merged.md", show_default=True, help="Markdown file to write.")
def merge_command(reports, out):
    """Compare REPORT.json files from several machines in one Markdown table."""
    from hemalite.benchmarks.report import load_report, merge
    from hemalite.files import write_text

    loaded = [load_report(r) for r in reports]
    text = merge(loaded)
    write_text(out, text)
    click.echo(text)
    click.echo(f"wrote {out}")




@click.command("sweep", cls=Command, epilog=DISCLAIMER)
@click.argument("data_dir", type=click.Path(file_okay=False, exists=True))
@click.option("--out", default=SweepConfig.out, show_default=True,
              help="Folder of the sweep: one run directory per configuration, and the summary.")
@click.option("--sizes", type=ThreadCounts(), default=",".join(map(str, SweepConfig.sizes)),
              show_default=True, help="Input sides to try, comma-separated (multiples of 4).")
@click.option("--fine-tune-from", "boundaries", multiple=True,
              default=SweepConfig.boundaries, show_default=True,
              help="First backbone layer fine-tuned; repeat to try several.")
@click.option("--weights", default=SweepConfig.weights, show_default=True,
              help="'imagenet' (Keras's download) or a local .weights.h5.")
@click.option("--fine-tune-epochs", type=click.IntRange(min=0),
              default=SweepConfig.fine_tune_epochs, show_default=True)
@click.option("--runs", type=click.IntRange(min=1), default=SweepConfig.runs,
              show_default=True, help="Timed invokes per latency figure.")
@click.option("--retime", is_flag=True,
              help="At the end, time every configuration again side by side (files "
                   "alternating, three rounds): for a machine that trained while it timed.")
@click.option("--teacher", default=None, metavar="RUN",
              help="Also train every configuration distilled from this finished run "
                   "(`hemalite train --teacher`), named `..._distilled`.")
@click.option("--distill", type=click.FloatRange(0.0, 1.0), default=SweepConfig.distill,
              show_default=True, help="With --teacher: the teacher's share of the loss.")
@click.option("--verbose", is_flag=True)
def sweep_command(data_dir, out, sizes, boundaries, weights, fine_tune_epochs, runs, retime,
                  teacher, distill, verbose):
    """Train, convert, benchmark and audit each configuration, then compare them.

    Every size x --fine-tune-from combination is trained with the same recipe and split
    (a run directory each under --out), converted to float32 and int8, and measured with
    `hemalite bench`'s harness on the validation split (never the test split). Resumable:
    run the same command again and finished steps are skipped. Writes sweep.md, sweep.json
    and sweep.png (accuracy as is, the audit's mean and worst shift against int8 latency
    and size, the Pareto front marked). Each configuration trains for minutes to half an
    hour on a 2-core CPU.
    """
    setup_logging(verbose)
    cfg = SweepConfig(data_dir=data_dir, out=out, sizes=tuple(sizes),
                      boundaries=tuple(boundaries), weights=weights,
                      fine_tune_epochs=fine_tune_epochs, runs=runs, teacher=teacher,
                      distill=distill)
    rows = run_sweep(cfg, retime)
    click.echo(f"{len(rows)} configurations; wrote {out}/sweep.md, sweep.json, sweep.png")
