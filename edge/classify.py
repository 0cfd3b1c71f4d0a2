"""Classify images with a loaded model: decisions, file pipeline, running summary.

Decoding overlaps with inference: a small thread pool decodes and resizes the next images
while the interpreter runs the current one (Pillow releases the GIL while decoding).
"""
from __future__ import annotations

import collections
import csv
import json
import os
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

import numpy as np

from hemalite import acquisition
from hemalite.contract import ImageError, InputSpec, load_image, preprocess
from hemalite.errors import HemaliteError
from hemalite.edge.assess import assess, heatmap_panel, visible_mask
from hemalite.edge.runtime import Model, top_k
from hemalite.edge.sources import display_name
from hemalite.metrics import confusion_matrix

REFER = "REFER"  # not for the label: `reason` says why, `detail` what to do
# REFER reasons a technician fixes at the microscope (the rest go to a morphologist)
AT_MICROSCOPE = (*acquisition.REASONS, "no-leukocyte")


@dataclass
class Result:
    source: str
    label: str | None = None  # a class, REFER, or None when the input failed
    probability: float | None = None
    top: list[tuple[str, float]] = field(default_factory=list)
    error: str | None = None
    truth: str | None = None  # the ground-truth folder name, when there is one
    reason: str | None = None  # why REFER: no-leukocyte, out-of-domain, low-confidence
    detail: str = ""  # the numbers behind the reason
    time_s: float | None = None  # frames: position in the video / seconds since the camera began
    # What a case call (hemalite.cases) aggregates; not written per image but `case`:
    probabilities: list[float] | None = None  # one per label, as assess() gave them
    case: str | None = None  # edge-classify --cases: the case folder the image belongs to
    heatmap: str | None = None  # the heatmap panel written for it (--heatmaps, --case-report)

    @property
    def guess(self) -> str | None:
        """The model's best class, also for a REFER."""
        return self.top[0][0] if self.top else None

    def line(self) -> str:
        if self.error:
            return f"{self.source}: ERROR {self.error}"
        others = ", ".join(f"{name} {p:.3f}" for name, p in self.top[1:])
        # a REFER has no probability of its own: its best guess's is in the detail
        shown = "-" if self.reason else f"{self.probability:.3f}"
        text = f"{self.source}\t{self.label}\t{shown}"
        if self.reason:
            text += f"\t{self.reason}: {self.detail} (best guess {self.guess} {self.probability:.3f})"
        return text + (f"\t({others})" if others else "")


def decide(scores: np.ndarray, labels, k: int = 1, min_confidence: float = 0.0):
    """(label or REFER, probability of the top class, top-k [(label, p)])."""
    best = top_k(scores, max(1, k))
    top = [(labels[i], p) for i, p in best]
    label, p = top[0]
    return (REFER if p < min_confidence else label), p, top


@dataclass(frozen=True)
class Checks:
    """What decides REFER besides the label: the floor, the domain check, heatmaps."""

    min_confidence: float = 0.0
    domain_check: bool = True
    heatmap_dir: str | None = None  # write image | heatmap | outline panels here


def ground_truth(path: str, labels, root: str | None = None) -> str | None:
    """The label of the class folder an image sits in, as training labels it, if any.

    Found under a folder given as input (root): the folder directly under root, at any
    depth (root/<label>/sub/x.jpg), else root itself when named after a label
    (`edge-classify data/Pre`). A file named directly: its parent folder.
    """
    if root is not None:
        first = os.path.relpath(path, root).split(os.sep)
        if len(first) > 1 and first[0] in labels:
            return first[0]
        path = os.path.join(root, "_")  # the root's own name is the last hope
    parent = os.path.basename(os.path.dirname(os.path.abspath(path)))
    return parent if parent in labels else None


@dataclass
class Summary:
    """Running totals for the end-of-run summary."""

    labels: tuple[str, ...]
    n: int = 0
    failed: int = 0
    refer: int = 0
    no_truth: int = 0  # classified images outside any folder named after a label
    counts: collections.Counter = field(default_factory=collections.Counter)
    reasons: collections.Counter = field(default_factory=collections.Counter)
    truth: list[int] = field(default_factory=list)
    predicted: list[int] = field(default_factory=list)
    invoke_s: float = 0.0
    decode_s: float = 0.0
    wall_s: float = 0.0

    def add(self, r: Result) -> None:
        self.n += 1
        if r.error:
            self.failed += 1
            return
        self.counts[r.label] += 1
        self.refer += r.label == REFER
        if r.reason:
            self.reasons[r.reason] += 1
        self.no_truth += r.truth is None
        if r.truth is not None:  # REFER is the column after the labels
            self.truth.append(self.labels.index(r.truth))
            self.predicted.append(len(self.labels) if r.label == REFER
                                  else self.labels.index(r.label))

    @property
    def classified(self) -> int:
        return self.n - self.failed

    def accuracy(self) -> float | None:
        """Accuracy on the images with a ground truth that were not REFER."""
        decided = [(t, p) for t, p in zip(self.truth, self.predicted) if p < len(self.labels)]
        return float(np.mean([t == p for t, p in decided])) if decided else None

    def text(self) -> str:
        at_scope = [f"{k} {v}" for k, v in sorted(self.reasons.items()) if k in AT_MICROSCOPE]
        person = [f"{k} {v}" for k, v in sorted(self.reasons.items()) if k not in AT_MICROSCOPE]
        why = "; ".join(([f"to fix at the microscope: {', '.join(at_scope)}"] if at_scope else [])
                        + ([f"for a morphologist: {', '.join(person)}"] if person else []))
        lines = [f"{self.n} input{'s' if self.n != 1 else ''}: {self.classified} classified, {self.failed} failed, "
                 f"{self.refer} REFER{f' ({why})' if why else ''}"]
        if self.counts:  # nothing classified (every input failed): no empty line
            lines.append("per class: " + ", ".join(f"{k} {v}"
                                                   for k, v in sorted(self.counts.items())))
        if self.truth:
            k, accuracy = len(self.labels), self.accuracy()
            decided = sum(p < k for p in self.predicted)
            lines.append(f"accuracy {accuracy:.4f} on {decided} images with ground-truth "
                         "folders (REFER excluded)" if accuracy is not None else
                         "accuracy: none, every image with a ground-truth folder was REFER")
            if self.no_truth:
                lines.append(f"{self.no_truth} classified images are not under a folder named "
                             "after a label: no ground truth, not counted in the accuracy")
            columns = (*self.labels, REFER)
            cm = confusion_matrix(self.truth, self.predicted, k + 1)[:k]
            width = max(len(x) for x in columns) + 2
            lines.append("confusion (rows true, columns predicted):")
            lines.append(" " * width + "".join(f"{x:>{width}}" for x in columns))
            for name, row in zip(self.labels, cm):
                lines.append(f"{name:<{width}}" + "".join(f"{v:>{width}}" for v in row))
        if self.classified and self.wall_s > 0:
            lines.append(f"throughput {self.classified / self.wall_s:.1f} images/s end to end; "
                         f"invoke only {self.classified / max(self.invoke_s, 1e-9):.1f} images/s "
                         f"({self.invoke_s / self.wall_s:.0%} of wall time in invoke)")
        return "\n".join(lines)


def classify(model: Model, pixels: np.ndarray, summary: Summary, k: int = 1,
             checks: Checks = Checks(), source: str = "", rgb: np.ndarray | None = None,
             measures: dict | None = None) -> Result:
    """One preprocessed image -> a Result (label or REFER with its reason); invoke timed.

    With checks.heatmap_dir, the image (`rgb`, else the model-size pixels), its heatmap and
    the leukocyte outline are written there side by side, named after `source`. `measures`:
    the pixels' acquisition measures when already made (classify_paths makes them while
    decoding), else assess makes them.
    """
    start = time.perf_counter()
    a = assess(model, pixels, checks.min_confidence, checks.domain_check, measures)
    summary.invoke_s += time.perf_counter() - start
    label, p, top = decide(a.probabilities, model.info.labels, k)
    result = Result(source, REFER if a.reason else label, p, top, reason=a.reason,
                    detail=a.detail, probabilities=[float(v) for v in a.probabilities])
    if checks.heatmap_dir and a.cam is not None:
        result.heatmap = save_heatmap(checks.heatmap_dir, source,
                                      rgb if rgb is not None else pixels, pixels, a.cam,
                                      int(np.argmax(a.probabilities)),
                                      visible_mask(model, pixels))
    return result


def save_heatmap(folder: str, source: str, rgb: np.ndarray, pixels: np.ndarray,
                 cam: np.ndarray, label: int, visible: np.ndarray | None = None) -> str:
    """Write the image | heatmap | outline panel as PNG; returns its path."""
    from PIL import Image

    os.makedirs(folder, exist_ok=True)
    stem = os.path.splitext(os.path.basename(source))[0] or "image"
    path = os.path.join(folder, f"{stem}.heatmap.png")
    n = 1
    while os.path.exists(path):  # two inputs with one name in different folders
        path = os.path.join(folder, f"{stem}.{n}.heatmap.png")
        n += 1
    Image.fromarray(heatmap_panel(rgb, pixels, cam, label, visible=visible)).save(path)
    return path


def _decode(path: str, spec: InputSpec, keep_rgb: bool = False, measure: bool = False):
    """(pixels, original rgb or None, acquisition measures or None, error, seconds); the
    original only for heatmaps, the measures (hemalite.acquisition, which need only the
    pixels) for a model with a domain check: made here, in the decoding threads, they
    overlap the previous image's invoke instead of following it."""
    start = time.perf_counter()
    try:
        rgb = load_image(path, spec)  # the same decode with or without heatmaps
        pixels = preprocess(rgb, spec)
        measures = acquisition.measure(pixels) if measure else None
        return pixels, rgb if keep_rgb else None, measures, None, time.perf_counter() - start
    except ImageError as err:
        return None, None, None, str(err), time.perf_counter() - start
    except OSError as err:  # permission denied and the like
        return None, None, None, err.strerror or str(err), time.perf_counter() - start


def classify_paths(model: Model, paths: Iterable[str | tuple[str, str | None]],
                   summary: Summary, k: int = 1, checks: Checks = Checks(),
                   workers: int = 2) -> Iterator[Result]:
    """Decode in a thread pool (in order, a bounded window ahead), invoke on this thread.

    `paths` holds file names or (file name, root) pairs from sources.find_images: the
    root is where the ground truth is read from (see ground_truth).
    """
    labels, spec = model.info.labels, model.info.spec
    measure = model.domain is not None
    window: collections.deque = collections.deque()
    paths = iter(paths)
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        def refill():
            while len(window) < 2 * max(1, workers):
                item = next(paths, None)
                if item is None:
                    return
                path, root = item if isinstance(item, tuple) else (item, None)
                window.append((path, root, pool.submit(_decode, path, spec,
                                                       checks.heatmap_dir is not None,
                                                       measure)))
        refill()
        while window:
            path, root, future = window.popleft()
            refill()
            pixels, rgb, measures, error, decode_s = future.result()
            summary.decode_s += decode_s
            if error:
                result = Result(display_name(path), error=error)
            else:
                result = classify(model, pixels, summary, k, checks, display_name(path), rgb,
                                  measures)
            result.truth = ground_truth(path, labels, root)
            summary.add(result)
            summary.wall_s = time.perf_counter() - start
            yield result


@dataclass(frozen=True)
class ClassifyConfig:
    """What edge-classify was asked to do: the CLI's defaults, and (with --csv / --jsonl)
    saved beside the results as RESULTS.config.json, so a results file says how it was made."""

    model: str = ""  # "" = the bundled int8 model
    paths: tuple[str, ...] = ()
    manifest: str | None = None
    data_root: str = "."
    camera: str | None = None
    video: str | None = None
    picamera: bool = False
    top_k: int = 1
    min_confidence: str = "auto"  # as given; the floor used is in `floor`
    floor: float | None = None
    domain_check: bool = True
    heatmap_dir: str | None = None
    num_threads: int | None = None
    runtime: str | None = None
    workers: int = 2
    every: int = 30
    max_frames: int = 0
    cases: bool = False  # --cases: each sub-folder of a folder given is a case
    case_csv: str | None = None
    case_jsonl: str | None = None
    case_report: str | None = None
    case_min_fields: int | None = None  # None: the rule stored in the model
    case_max_discordance: float | None = None
    case_rule: dict | None = None  # the rule used (hemalite.cases.CaseRule), when --cases


def write_config(config: ClassifyConfig, *results: str | None) -> str | None:
    """RESULTS.config.json beside the first results file given (None when there is none)."""
    from hemalite import __version__
    from hemalite.files import write_json

    first = next((r for r in results if r), None)
    if first is None:
        return None
    path = os.path.splitext(first)[0] + ".config.json"
    write_json(path, {**asdict(config), "hemalite": __version__})
    return path


class OutputError(HemaliteError):
    """A results file that cannot be written (one line, no traceback)."""


def _open_output(path: str, newline: str | None = None):
    """Open a results file for writing, making its folder as --heatmaps and --save-dir do."""
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        return open(path, "w", newline=newline, encoding="utf-8")
    except OSError as err:
        raise OutputError(f"cannot write {path}: {err.strerror or err}") from None


class ResultWriter:
    """CSV and/or JSONL results, one row per input, flushed as they come; with `cases`
    (edge-classify --cases) each row also names its case (a last `case` column)."""

    ROW = ("source", "label", "probability", "top", "error", "truth", "reason", "detail",
           "time_s")  # the JSONL keys; the per-image output is these, whatever Result holds

    def __init__(self, csv_path: str | None = None, jsonl_path: str | None = None,
                 cases: bool = False):
        self._files = []
        self._csv = self._jsonl = None
        self._keys = self.ROW + (("case",) if cases else ())
        if csv_path:
            fh = _open_output(csv_path, newline="")
            self._files.append(fh)
            self._csv = (fh, csv.writer(fh))
            self._csv[1].writerow(["source", "label", "probability", "top_k", "error", "truth",
                                   "reason", "detail", "time_s"] + (["case"] if cases else []))
        if jsonl_path:
            self._jsonl = _open_output(jsonl_path)
            self._files.append(self._jsonl)

    def write(self, r: Result) -> None:
        if self._csv:
            top = ";".join(f"{name}:{p:.4f}" for name, p in r.top)
            prob = "" if r.probability is None else f"{r.probability:.4f}"
            self._csv[1].writerow([r.source, r.label or "", prob, top, r.error or "",
                                   r.truth or "", r.reason or "", r.detail,
                                   "" if r.time_s is None else r.time_s]
                                  + ([r.case or ""] if "case" in self._keys else []))
            self._csv[0].flush()
        if self._jsonl:
            row = asdict(r)
            self._jsonl.write(json.dumps({k: row[k] for k in self._keys}) + "\n")
            self._jsonl.flush()

    def close(self) -> None:
        for fh in self._files:
            fh.close()
