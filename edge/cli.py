"""`edge-classify`: classify smear images from files, folders, a camera or a video.

The pipeline reads: frames() -> classify() -> overlay(). No TensorFlow is imported.
"""
from __future__ import annotations

import logging
import os
import sys

import click

from hemalite import DISCLAIMER, __version__
from hemalite.cli import Command, setup_logging
from hemalite.contract import IMAGE_EXTENSIONS
from hemalite.edge import classify, live, runtime, sources

log = logging.getLogger(__name__)


class Confidence(click.ParamType):
    """--min-confidence: 'auto' (the model's stored floor) or a probability in [0, 1],
    checked as the command line is read; the one place to teach it other values."""

    name = "auto|probability"

    def convert(self, value, param, ctx):
        if isinstance(value, str) and value.strip().lower() == "auto":
            return "auto"
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is neither a number nor 'auto'", param, ctx)
        return click.FloatRange(0.0, 1.0).convert(number, param, ctx)


def _model_help() -> str:
    return ("A .tflite made by `hemalite convert`  [default: the bundled int8 model, "
            "hemalite/models/hemalite_int8.tflite]")


@click.command("edge-classify", cls=Command, epilog=DISCLAIMER)
@click.version_option(__version__, prog_name="edge-classify")
@click.argument("paths", nargs=-1)
@click.option("--model", "model_path", default=None, help=_model_help())
@click.option("--camera", default=None, is_flag=False, flag_value="0",
              help="Classify a live camera: an index (0) or a device such as /dev/video0.")
@click.option("--picamera", is_flag=True, help="Use the Raspberry Pi camera (Picamera2).")
@click.option("--video", type=click.Path(dir_okay=False), help="Classify the frames of a video file.")
@click.option("--manifest", type=click.Path(dir_okay=False, exists=True),
              help="Classify the images a CSV manifest lists (its 'path' column), e.g. a test split.")
@click.option("--data-root", default=classify.ClassifyConfig.data_root, show_default=True,
              help="Folder the manifest's relative paths start from.")
@click.option("--top-k", type=click.IntRange(min=1), default=classify.ClassifyConfig.top_k,
              show_default=True,
              help="Classes shown per image (at most the model's number of labels).")
@click.option("--min-confidence", type=Confidence(), show_default=True,
              default=classify.ClassifyConfig.min_confidence,
              help="Below this top probability the result is REFER (low-confidence). 'auto' "
                   "uses the floor stored in the model by `hemalite convert` (0 if it has none).")
@click.option("--domain-check/--no-domain-check", show_default=True,
              default=classify.ClassifyConfig.domain_check,
              help="REFER images unlike the training images (out-of-domain): the model's "
                   "features, cell size and stain colour, as fitted and stored in the model.")
@click.option("--heatmaps", "heatmap_dir", type=click.Path(file_okay=False),
              help="Write image | heatmap | leukocyte outline panels (PNG) to this folder; "
                   "with --camera/--video, the live window shows the heatmap too.")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), help="Write results as CSV.")
@click.option("--jsonl", "jsonl_path", type=click.Path(dir_okay=False), help="Write results as JSON lines.")
@click.option("--num-threads", type=click.IntRange(min=1), default=os.cpu_count() or 1,
              show_default=True, help="Interpreter threads.")
@click.option("--workers", type=click.IntRange(min=1), default=classify.ClassifyConfig.workers,
              show_default=True,
              help="Decoding threads for files (overlap with inference).")
@click.option("--strict", is_flag=True, help="Stop at the first input that fails.")
@click.option("--quiet", is_flag=True, help="Only the summary, no per-image or per-frame lines.")
@click.option("--headless", is_flag=True, help="Never open a window (automatic with no display).")
@click.option("--save-dir", type=click.Path(file_okay=False), help="Save annotated frames here.")
@click.option("--every", type=click.IntRange(min=1), default=classify.ClassifyConfig.every,
              show_default=True,
              help="Camera/video: print and save every N-th frame.")
@click.option("--max-frames", type=click.IntRange(min=0),
              default=classify.ClassifyConfig.max_frames,
              help="Camera/video: stop after N frames (0 = no limit).")
@click.option("--runtime", "runtime_name", type=click.Choice([r for r, _ in runtime.RUNTIMES]),
              default=None, help="Force a runtime  [default: first found of these]")
@click.option("--verbose", is_flag=True, help="Say which runtime and model run.")
def classify_command(paths, model_path, manifest, data_root, camera, picamera, video, top_k, min_confidence,
                     domain_check, heatmap_dir, csv_path, jsonl_path, num_threads, workers,
                     strict, quiet, headless, save_dir, every, max_frames, runtime_name, verbose):
    """Classify peripheral blood smear images as Benign, Early Pre-B, Pre-B or Pro-B ALL.

    PATHS may be image files, folders (searched recursively) or globs. One line per
    image: path, label, probability (and the next classes with --top-k). When images sit
    in class folders named after the labels, directly under a folder given (at any depth
    below them), the summary adds accuracy and a confusion matrix. A bad file gets one
    error line and the run goes on; the exit code is 1 when any input failed.

    \b
    Examples:
      edge-classify smears/                      # a folder
      edge-classify a.jpg b.png --top-k 2 --csv results.csv
      edge-classify --camera 0 --min-confidence 0.9
      edge-classify --video slide_scan.mp4 --headless --save-dir frames/
    """
    setup_logging(verbose)
    inputs, streaming = _inputs(paths, manifest, data_root, camera, picamera, video)
    model = runtime.load_model(model_path or runtime.default_model_path(), num_threads,
                               runtime_name)
    if top_k > len(model.info.labels):
        raise click.BadParameter(f"{top_k} is more than the model's {len(model.info.labels)} "
                                 "labels", param_hint="'--top-k'")
    if verbose:
        click.echo(f"model {model.path} ({model.info.name}, {len(model.info.labels)} labels, "
                   f"{model.info.spec.width}x{model.info.spec.height}); runtime "
                   f"{model.runtime} {model.runtime_version}, {model.num_threads} threads",
                   err=True)
    checks = classify.Checks(_floor(model, min_confidence, verbose), domain_check, heatmap_dir)
    if domain_check and model.domain is None:
        click.echo(f"note: {os.path.basename(model.path)} carries no domain check; only "
                   "--min-confidence can REFER", err=True)
    summary = classify.Summary(model.info.labels)
    writer = classify.ResultWriter(csv_path, jsonl_path)
    classify.write_config(classify.ClassifyConfig(
        model.path, tuple(paths), manifest, data_root, camera, video, picamera, top_k,
        str(min_confidence), checks.min_confidence, domain_check, heatmap_dir,
        model.num_threads, model.runtime, workers, every, max_frames), csv_path, jsonl_path)
    try:
        if streaming:
            code = _run_frames(model, summary, writer, camera, picamera, video, top_k,
                               checks, headless, save_dir, every, max_frames, quiet)
        else:
            code = _run_files(model, summary, writer, inputs, top_k, checks, workers,
                              strict, quiet)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        code = 130
    finally:
        writer.close()
    if summary.n:  # an empty run has had its one error line
        click.echo(summary.text())
    sys.exit(code)


def _inputs(paths, manifest, data_root, camera, picamera, video) -> tuple[list, bool]:
    """([(path, root)], streaming): the files to classify (the root sets the truth), and whether
    a camera or video is the source instead; a UsageError for no or clashing sources."""
    given = [name for name, on in (("PATHS", paths), ("--manifest", manifest),
                                   ("--camera", camera is not None), ("--picamera", picamera),
                                   ("--video", video)) if on]
    streaming = bool(camera is not None or picamera or video)
    if streaming and len(given) > 1:
        raise click.UsageError(f"{' and '.join(given)} given: choose one source (files and "
                               "--manifest combine; a camera or a video runs alone)")
    inputs = list(sources.find_images(list(paths)))
    if manifest:
        inputs += [(path, data_root) for path in sources.manifest_paths(manifest, data_root)]
    if not paths and not manifest and not streaming:
        raise click.UsageError("give image paths, --manifest, --camera, --picamera or --video")
    return inputs, streaming


def _floor(model, value: str | float, verbose: bool) -> float:
    """--min-confidence (checked by Confidence): a probability, or 'auto' for the floor
    stored in the model."""
    if value == "auto":
        floor = model.domain.min_confidence if model.domain else 0.0
        if verbose:
            click.echo(f"--min-confidence auto: {floor:.3f}"
                       + ("" if floor else " (the model stores no floor)"), err=True)
        return floor
    return float(value)


def _run_files(model, summary, writer, inputs, top_k, checks, workers, strict, quiet):
    from tqdm import tqdm

    if not inputs:
        click.echo("error: no images found (folders are searched for "
                   f"{', '.join(IMAGE_EXTENSIONS)})", err=True)
        return 1
    # a progress bar on a terminal's stderr when the per-image lines are not shown there
    progress = tqdm(total=len(inputs), unit="img", desc="classifying", leave=False,
                    disable=None if quiet or not sys.stdout.isatty() else True)
    with progress:
        for result in classify.classify_paths(model, inputs, summary, top_k, checks, workers):
            writer.write(result)
            progress.update()
            if result.error:
                progress.write(result.line(), file=sys.stderr)
                if strict:
                    progress.write("stopping: --strict", file=sys.stderr)
                    return 1
            elif not quiet:
                click.echo(result.line())
    return 1 if summary.failed else 0


def _run_frames(model, summary, writer, camera, picamera, video, top_k, checks,
                headless, save_dir, every, max_frames, quiet=False):
    """The camera/video loop (hemalite.edge.live), with its lines and exit code."""
    problem = None if headless else sources.window_problem()
    display = live.Display(window=not headless and problem is None, save_dir=save_dir,
                           every=every, max_frames=max_frames)
    frames = live.classify_frames(
        model, live.open_frames(camera, picamera, video),
        live.frame_source(camera, picamera, video), summary, top_k, checks, display,
        sources.video_fps(video) if video else None)
    index = 0
    try:
        for frame in frames:
            index = frame.index
            writer.write(frame.result)
            if index == 1 and not headless and not display.window:
                click.echo(f"no display can be opened ({problem}): running headless", err=True)
            if frame.report and not quiet:
                click.echo(frame.result.line() + f"\t{frame.fps:.1f} FPS")
    except sources.SourceError as err:
        click.echo(f"error: {err}", err=True)
        return 1
    if index == 0:
        click.echo("error: the source delivered no frames", err=True)
        return 1
    return 0
