"""`edge-classify`: classify smear images from files, folders, a camera or a video.

The pipeline reads: frames() -> classify() -> overlay(). No TensorFlow is imported.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import sys

import click

from hemalite import DISCLAIMER, __version__
from hemalite.cli import Command, setup_logging
from hemalite.contract import IMAGE_EXTENSIONS
from hemalite.cases import NO_IMAGES, NO_READABLE_IMAGE
from hemalite.edge import calibrate, classify, live, runtime, sources
from hemalite.edge import cases as edge_cases
from hemalite.edge.assess import UNSURE_BELOW

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
              help="REFER what the model should not judge: images whose exposure, "
                   "magnification, focus or stain is outside the training images' range (or "
                   f"near it, with the call under {UNSURE_BELOW}), and images whose features "
                   "are unlike the training images' (out-of-domain). The ranges and features "
                   "are fitted and stored in the model.")
@click.option("--heatmaps", "heatmap_dir", type=click.Path(file_okay=False),
              help="Write image | heatmap | leukocyte outline panels (PNG) to this folder; "
                   "with --camera/--video, the live window shows the heatmap too.")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), help="Write results as CSV.")
@click.option("--jsonl", "jsonl_path", type=click.Path(dir_okay=False), help="Write results as JSON lines.")
@click.option("--cases", is_flag=True, default=classify.ClassifyConfig.cases,
              help="Each immediate sub-folder of a folder given is one case (a patient; its "
                   "images at any depth below it): after the images, one call per case from "
                   "its accepted fields, in a table (docs/cases.md).")
@click.option("--case-csv", type=click.Path(dir_okay=False),
              help="Write one row per case as CSV (implies --cases).")
@click.option("--case-jsonl", type=click.Path(dir_okay=False),
              help="Write one row per case as JSON lines (implies --cases).")
@click.option("--case-report", type=click.Path(file_okay=False),
              help="Write a Markdown report per case, with its fields' heatmaps, to this "
                   "folder (implies --cases).")
@click.option("--case-min-fields", type=click.IntRange(min=1),
              default=classify.ClassifyConfig.case_min_fields,
              help="Accepted fields a case call needs; fewer: REFER too-few-fields  "
                   "[default: the rule stored in the model]")
@click.option("--case-max-discordance", type=click.FloatRange(min=0.0),
              default=classify.ClassifyConfig.case_max_discordance,
              help="Mean log-ratio per accepted field against the case's class above which "
                   "the case is REFER discordant  [default: the rule stored in the model]")
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
                     domain_check, heatmap_dir, csv_path, jsonl_path, cases, case_csv, case_jsonl,
                     case_report, case_min_fields, case_max_discordance, num_threads, workers,
                     strict, quiet, headless, save_dir, every, max_frames, runtime_name, verbose):
    """Classify peripheral blood smear images as Benign, Early Pre-B, Pre-B or Pro-B ALL.

    PATHS may be image files, folders (searched recursively) or globs. One line per
    image: path, label, probability (and the next classes with --top-k). An image the
    model should not judge is REFER, with '-' for its probability, its reason and what to
    fix at the microscope, then its best guess: no-leukocyte, exposure (the lamp),
    magnification (the objective), out-of-focus, stain (the stain or white balance),
    out-of-domain, low-confidence (README: REFER reasons). When images sit in class folders
    named after the labels, directly under a folder given (at any depth below them), the
    summary adds accuracy and a confusion matrix. A bad file gets one error line and the
    run goes on; the exit code is 1 when any input failed.

    \b
    Examples:
      edge-classify smears/                      # a folder
      edge-classify a.jpg b.png --top-k 2 --csv results.csv
      edge-classify --camera 0 --min-confidence 0.9
      edge-classify --video slide_scan.mp4 --headless --save-dir frames/
      edge-classify patients/ --cases --case-csv cases.csv   # a sub-folder per patient
    """
    setup_logging(verbose)
    inputs, streaming = _inputs(paths, manifest, data_root, camera, picamera, video)
    cases = cases or bool(case_csv or case_jsonl or case_report)
    if not cases and (case_min_fields is not None or case_max_discordance is not None):
        raise click.UsageError("--case-min-fields and --case-max-discordance set the case "
                               "rule: add --cases (and a folder of case sub-folders)")
    folders = _case_folders(paths, streaming, heatmap_dir, case_report) if cases else []
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
    site = calibration_line(model)
    if site:
        click.echo(site, err=True)
    checks = classify.Checks(_floor(model, min_confidence, verbose), domain_check, heatmap_dir)
    if domain_check and model.domain is None:
        click.echo(f"note: {os.path.basename(model.path)} carries no domain check; only "
                   "--min-confidence can REFER", err=True)
    rule, rule_text = _case_rule(model, case_min_fields, case_max_discordance) if cases \
        else (None, "")
    summary = classify.Summary(model.info.labels)
    writer = classify.ResultWriter(csv_path, jsonl_path, cases=cases)
    case_writer = edge_cases.CaseWriter(model.info.labels, case_csv, case_jsonl) if cases else None
    classify.write_config(classify.ClassifyConfig(
        model.path, tuple(paths), manifest, data_root, camera, video, picamera, top_k,
        str(min_confidence), checks.min_confidence, domain_check, heatmap_dir,
        model.num_threads, model.runtime, workers, every, max_frames, cases, case_csv,
        case_jsonl, case_report, case_min_fields, case_max_discordance,
        dataclasses.asdict(rule) if rule else None),
        csv_path, jsonl_path, case_csv, case_jsonl)
    rows: list[dict] = []
    try:
        if streaming:
            code = _run_frames(model, summary, writer, camera, picamera, video, top_k,
                               checks, headless, save_dir, every, max_frames, quiet)
        elif cases:
            code = _run_cases(model, summary, writer, inputs, folders, top_k, checks, workers,
                              strict, quiet, (rule, rule_text), case_writer, case_report, rows)
        else:
            code = _run_files(model, summary, writer, inputs, top_k, checks, workers,
                              strict, quiet)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        code = 130
    finally:
        writer.close()
        if case_writer:
            case_writer.close()
    if summary.n:  # an empty run has had its one error line
        click.echo(summary.text())
    if cases:
        click.echo(edge_cases.case_table(rows, model.info.labels, rule_text))
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


def _case_folders(paths, streaming: bool, heatmap_dir, case_report) -> list[str]:
    """The folders whose sub-folders are the cases; a UsageError where --cases cannot apply."""
    if streaming:
        raise click.UsageError("--cases takes folders whose sub-folders are the cases, not a "
                               "camera or a video")
    if heatmap_dir and case_report:
        raise click.UsageError("--heatmaps and --case-report both write the heatmap panels: "
                               "with --case-report they sit beside each case's report")
    folders = sources.folders(list(paths))
    if not folders:
        raise click.UsageError("--cases: give a folder whose sub-folders are the cases "
                               "(one sub-folder per patient)")
    return folders


def _case_rule(model, min_fields: int | None, max_discordance: float | None):
    """(the rule, how it was set), resolved by edge.cases.case_rule; its note, if any, on
    stderr."""
    rule, text, note = edge_cases.case_rule(model, min_fields, max_discordance)
    if note:
        click.echo(note, err=True)
    return rule, text


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


def _run_cases(model, summary, writer, inputs, folders, top_k, checks, workers, strict, quiet,
               rule, case_writer, report_dir, rows: list) -> int:
    """The images case by case (classify_paths, as without --cases), each case called from
    its fields' results as soon as they are in. `rule`: (CaseRule, how it was set); `rows`
    gets the case rows."""
    import time

    from tqdm import tqdm

    groups = edge_cases.group_cases(inputs, folders)
    loose = sum(len(g.inputs) for g in groups if g.name is None)
    if loose:
        click.echo(f"note: {loose} image{'s are' if loose > 1 else ' is'} not inside a case "
                   "folder (a sub-folder of a folder given): classified, in no case", err=True)
    progress = tqdm(total=len(inputs), unit="img", desc="classifying", leave=False,
                    disable=None if quiet or not sys.stdout.isatty() else True)
    start, taken, index = time.perf_counter(), set(), []
    with progress:
        for group in groups:
            folder = None
            if report_dir and group.name is not None:
                folder = edge_cases.report_folder(report_dir, group, taken)
            group_checks = dataclasses.replace(checks, heatmap_dir=folder) if folder else checks
            results = []
            for result in classify.classify_paths(model, group.inputs, summary, top_k,
                                                  group_checks, workers):
                result.case = group.name
                writer.write(result)
                progress.update()
                results.append(result)
                if _show(result, progress, strict, quiet):
                    return 1
            if group.name is None:
                continue
            call = edge_cases.call_group(results, model.info.labels, rule[0])
            if call.reason in (NO_IMAGES, NO_READABLE_IMAGE):
                progress.write(f"case {group.name}: REFER {call.reason} ({call.detail})",
                               file=sys.stderr)
            truth = edge_cases.case_truth(results)
            row = edge_cases.case_row(group, call, model.info.labels, truth)
            case_writer.write(row)
            rows.append(row)
            if folder:
                index.append((row, edge_cases.write_case_report(
                    folder, group, call, results, truth, rule[1], model.path, model.info.spec)))
    summary.wall_s = time.perf_counter() - start
    if report_dir:
        edge_cases.write_index(report_dir, index, rule[1])
    if not inputs:
        click.echo("error: no images found (folders are searched for "
                   f"{', '.join(IMAGE_EXTENSIONS)})", err=True)
        return 1
    return 1 if summary.failed else 0


def _show(result, progress, strict: bool, quiet: bool) -> bool:
    """Print one image's line (errors on stderr); True when --strict stops the run."""
    if result.error:
        progress.write(result.line(), file=sys.stderr)
        if strict:
            progress.write("stopping: --strict", file=sys.stderr)
            return True
    elif not quiet:
        click.echo(result.line())
    return False


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
            if _show(result, progress, strict, quiet):
                return 1
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


def calibration_line(model) -> str | None:
    """The model's site calibration in one line (None for an uncalibrated model)."""
    return calibrate.status_line(model.info)


@click.command("edge-calibrate", cls=Command, epilog=DISCLAIMER)
@click.version_option(__version__, prog_name="edge-calibrate")
@click.argument("site_dir", type=click.Path(file_okay=False))
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="The calibrated .tflite to write; SITE.calibration.md/.json go beside it.")
@click.option("--model", "model_path", default=None, help=_model_help())
@click.option("--name", default="", help="The site's name  [default: the folder's name]")
@click.option("--min-accuracy", type=click.FloatRange(0, 1),
              default=calibrate.CalibrateConfig.min_accuracy, show_default=True,
              help="Validated when the 95 % lower bound of the calibrated accuracy (a REFER "
                   "counting as not right) reaches this.")
@click.option("--folds", type=click.IntRange(min=2), default=calibrate.CalibrateConfig.folds,
              show_default=True, help="Cross-validation folds.")
@click.option("--zoom", type=click.FloatRange(min=0.2, max=5), default=None,
              help="A known zoom instead of the reading: training's objective over the site's "
                   "(2 for a 50x objective against training's 100x)  [default: read off the "
                   "site's red cells and leukocytes]")
@click.option("--adapt", "ingredients", multiple=True, type=click.Choice(calibrate.INGREDIENTS),
              default=calibrate.CalibrateConfig.ingredients, show_default=True,
              help="What to adapt (repeat the option; the options given replace the "
                   "defaults: add head with --adapt zoom --adapt colour --adapt domain "
                   "--adapt acquisition --adapt floor --adapt head); fewer only to measure "
                   "each one.")
@click.option("--num-threads", type=click.IntRange(min=1), default=os.cpu_count() or 1,
              show_default=True, help="Interpreter threads.")
@click.option("--verbose", is_flag=True)
def calibrate_command(site_dir, out, model_path, name, min_accuracy, folds, zoom,
                      ingredients, num_threads, verbose):
    """Adapt the model to a lab's microscope with its own labelled images, and validate it.

    SITE_DIR holds one sub-folder per label (Benign, Early, Pre, Pro) with the site's own
    confirmed images (at least 10 per class). hemalite reads the zoom that undoes the
    site's objective off its red cells and leukocytes, and the colour step (hue turn,
    saturation gain) that undoes its stain colour off the leukocytes, moves the domain and
    acquisition checks to the site and sets a calibrated site's confidence floor (with
    `--adapt head` among the --adapt options it also refits the classifier's last layer
    inside the .tflite); then it validates by k-fold
    cross-validation, every fold scored by a model calibrated without it, through
    edge-classify's own decision. Writes OUT (one self-contained .tflite: `edge-classify
    --model OUT` needs no other flag) and OUT's calibration.md / calibration.json. When the
    95 % lower bound of the calibrated accuracy is under --min-accuracy the model is still
    written, marked not validated, and edge-classify warns on every run with it.

    \b
    Example:
      edge-calibrate site/ --out site.tflite --name "Lab 2, Olympus 60x"
      edge-classify --model site.tflite smears/
    """
    from tqdm import tqdm

    setup_logging(verbose)
    cfg = calibrate.CalibrateConfig(site_dir, out, model_path or "", name, min_accuracy,
                                    folds, zoom, tuple(ingredients))
    path = model_path or runtime.default_model_path()
    report = calibrate.calibrate(
        cfg, path, num_threads,
        lambda total: tqdm(total=total, desc="calibrating", unit="step", leave=False))
    cal, before, after = report["site_calibration"], report["before"], report["after"]
    click.echo(f"{cfg.out}: site '{cal['name']}', zoom {cal['zoom']:g}, hue "
               f"{cal['hue']:+g} degrees, saturation x{cal['saturation']:g}, adapted "
               f"{', '.join(cal['adapted'])} ({report['seconds']:.0f} s)")
    for key, what in (("right", "right (REFER = not right)"), ("referred", "referred"),
                      ("accepted_right", "right among the accepted")):
        b, a = before[key], after[key]
        click.echo(f"  {what}: {b['value']:.1%} before, {a['value']:.1%} after "
                   f"(95 % CI {a['wilson95'][0]:.1%}-{a['wilson95'][1]:.1%})"
                   if a["value"] is not None and b["value"] is not None else f"  {what}: -")
    low, bar = after["right"]["wilson95"][0], cfg.min_accuracy
    if cal["validated"]:
        click.echo(f"  validated: the 95 % lower bound {low:.1%} is at least the bar {bar:.0%}")
    elif low is not None:
        click.echo(f"  NOT VALIDATED: the 95 % lower bound {low:.1%} is under the bar {bar:.0%}"
                   f" (even all right, {calibrate.needed(bar)} images would be needed to reach"
                   " it)" + (f"; no images of {', '.join(cal['missing_classes'])}"
                             if cal["missing_classes"] else ""))
    if cal.get("kept_at_training"):
        click.echo(f"  the base model's best guess is right on only {cal['best_guess']:.0%} of "
                   "the site's images: the lamp and focus keep training's ranges (images out "
                   "of them are referred with the fix; if none is, the cause is elsewhere: "
                   "see calibration.md)", err=True)
    if cal["missing_classes"]:
        click.echo(f"  no images of {', '.join(cal['missing_classes'])}: not adapted nor "
                   "validated for them", err=True)
    click.echo(calibration_line(runtime.load_model(cfg.out, 1)), err=not cal["validated"])
    click.echo(f"  report: {os.path.splitext(cfg.out)[0]}.calibration.md")
