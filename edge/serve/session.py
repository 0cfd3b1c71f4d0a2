"""What `hemalite serve` serves, without a web framework: one server run's session.

Every image, uploaded or a camera frame, goes through edge-classify's own functions: the
contract's `load_image` and `preprocess`, then `classify()` (which calls `assess()`, the one
decision for every face), and the history is written by edge-classify's `ResultWriter`, so
the page, its JSON API and the command line give the same answer and the same columns.
Those functions take file paths; an upload is handed to them as a file that lives in RAM
only (MemoryFile), so nothing of an image reaches a disk unless saving is switched on.
A folder upload whose sub-folders are cases is called case by case by edge-classify
--cases' own functions (edge/cases.py, hemalite/cases.py) on the uploads' results, with the
rule edge-classify resolves: nothing is re-run, nothing decided here.
"""
from __future__ import annotations

import dataclasses
import io
import ipaddress
import os
import posixpath
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from hemalite.contract import ImageError, is_image_name, load_image, preprocess
from hemalite.edge import cases as edge_cases
from hemalite.edge import live, runtime, sources
from hemalite.edge.assess import heatmap_panel, image_cam, visible_mask
from hemalite.edge.classify import (REFER, Checks, ClassifyConfig, Result, ResultWriter,
                                    Summary, classify, ground_truth, write_config)
from hemalite.errors import HemaliteError

# What POST /api/classify answers: these fields of edge-classify's JSONL line, as it writes them.
API_FIELDS = ("label", "probability", "reason", "detail", "top")


class ServeError(HemaliteError):
    """`hemalite serve` cannot start as asked (one line, no traceback)."""


@dataclass(frozen=True)
class ServeConfig:
    """What `hemalite serve` was asked to do; its click options map onto these one to one.

    model          a .tflite made by `hemalite convert` ("" = the bundled int8 model)
    camera         live source: an OpenCV camera index or device (None = none)
    picamera       live source: the Raspberry Pi camera (Picamera2)
    video          live source: a video file, played in a loop at its own frame rate
    host           address to listen on; anything but loopback needs the access token
    port           TCP port (0 = a free one, chosen by the operating system)
    token          access token; None = generated at start when `host` is not loopback
    top_k          classes given per image, as edge-classify's --top-k
    min_confidence 'auto' (the floor stored in the model) or a probability, as edge-classify's
    domain_check   REFER images unlike the training images, as edge-classify's
    num_threads    interpreter threads (None = one per CPU)
    runtime        TFLite runtime to use (None = the first found)
    max_upload_mb  largest request accepted, in megabytes (one image per request from the page)
    save_dir       keep uploads, heatmap panels and results here; None = nothing is kept
                   after the session (uploads live in memory only)
    case_min_fields, case_max_discordance
                   the case rule's numbers, as edge-classify's --case-min-fields /
                   --case-max-discordance (None = the rule stored in the model)
    idle_s         the camera or video is read only while a page watched it this recently
    """

    model: str = ""
    camera: str | None = None
    picamera: bool = False
    video: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    top_k: int = 1
    min_confidence: str = "auto"
    domain_check: bool = True
    num_threads: int | None = None
    runtime: str | None = None
    max_upload_mb: float = 20.0
    save_dir: str | None = None
    case_min_fields: int | None = None
    case_max_discordance: float | None = None
    idle_s: float = 10.0

    @property
    def live(self) -> bool:
        return self.camera is not None or self.picamera or self.video is not None


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach: 127.0.0.0/8, ::1, 'localhost'."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class MemoryFile:
    """A file in RAM only (Linux's memfd) with a path, /proc/self/fd/N, so that edge-classify's
    path-taking functions (load_image, ResultWriter) run on an upload unchanged. Closed, it
    is gone. Where memfd_create is missing (not Linux) an unlinked temporary file stands in
    (not run here)."""

    def __init__(self, data: bytes = b"", name: str = "hemalite-serve"):
        if hasattr(os, "memfd_create"):
            self._tmp = None
            self.fd = os.memfd_create(name, getattr(os, "MFD_CLOEXEC", 0))
        else:
            self._tmp = tempfile.TemporaryFile()
            self.fd = self._tmp.fileno()
        proc = f"/proc/self/fd/{self.fd}"
        self.path = proc if os.path.exists(proc) else f"/dev/fd/{self.fd}"
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]

    def read(self) -> bytes:
        with open(self.path, "rb") as fh:  # a new open file: from the start, whoever wrote
            return fh.read()

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.close()
        elif self.fd >= 0:
            os.close(self.fd)
        self.fd = -1

    def __enter__(self) -> MemoryFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def decode(data: bytes, spec) -> np.ndarray:
    """An upload's bytes -> RGB pixels, by the contract's load_image as edge-classify decodes
    a file (draft mode, EXIF rotation, every colour mode); ImageError with one line."""
    with MemoryFile(data) as memory:
        try:
            return load_image(memory.path, spec)
        except ImageError as err:  # Pillow names the file it read: not the user's
            raise ImageError(str(err).replace(memory.path, "the upload")) from None


def upload_name(name: str | None, number: int) -> str:
    """A printable name for an upload from the name its browser gave (a folder upload's
    relative path): never a path on this machine, never written as one."""
    name = (name or "").replace("\\", "/")
    parts = [p for p in name.split("/") if p.strip() not in ("", ".", "..")]
    text = sources.display_name("/".join(parts))
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text[-200:] or f"upload {number}"


def upload_truth(source: str, labels, rooted: bool = True) -> str | None:
    """The class folder of a folder upload, read as edge-classify reads a folder given to it
    (the folder chosen is the root); None for a single file. rooted=False: `source` is
    relative to a folder that has no name (the case API without its `folder` field)."""
    if not rooted:  # an absolute, made-up root: ground_truth never reads the disk or cwd
        return ground_truth("/" + source, labels, "/")
    parts = source.split("/")
    return ground_truth(source, labels, parts[0]) if len(parts) > 1 else None


def walk_key(relative: str) -> tuple:
    """The order edge-classify finds a folder's images in (sources.find_images: a folder's
    files by name, then its sub-folders by name, recursively), for a relative path."""
    parts = relative.split("/")
    return tuple((1, p) for p in parts[:-1]) + ((0, parts[-1]),)


def group_uploads(fields: list[tuple[str, Entry]], seen=()) -> tuple[list, int]:
    """([(case, [entry, ...])], images in no case) for uploads given with their paths
    relative to the folder chosen: each immediate sub-folder is a case, its images at any
    depth, in edge-classify's order (cases by name; a sub-folder in `seen` with no image is
    a case with no field, as edge-classify gives an empty case folder)."""
    groups: dict[str, list] = {name: [] for name in seen if name}
    loose = 0
    for relative, entry in fields:
        parts = relative.split("/")
        if len(parts) < 2:
            loose += 1
            continue
        groups.setdefault(parts[0], []).append((walk_key(relative), entry))
    return [(name, [e for _, e in sorted(groups[name], key=lambda m: m[0])])
            for name in sorted(groups)], loose


def under_folder(names: list[str], folder: str) -> tuple[list[tuple[str, int]], set[str]]:
    """([(path relative to `folder`, index)] of the image names under it, the sub-folders
    seen under it): what a folder upload's names say, as edge-classify searches a folder
    (image extensions only; a sub-folder holding no image still is a case). `folder` ""
    takes the names as relative already."""
    prefix = folder + "/" if folder else ""
    images, seen = [], set()
    for index, name in enumerate(names):
        if not name.startswith(prefix):
            continue
        relative = name[len(prefix):]
        parts = relative.split("/")
        if len(parts) > 1:
            seen.add(parts[0])
        if is_image_name(relative):
            images.append((relative, index))
    return images, seen


def case_folder(name: str | None) -> str:
    """The name of the folder a case upload came from (a name, never a path here)."""
    return upload_name(name, 0) if name and name.strip(" ./\\") else ""


def model_card(model: runtime.Model, checks: Checks) -> str:
    """The model card line: name, version, labels, input, runtime and what refers."""
    info = model.info
    domain = ("domain check on" if checks.domain_check else "domain check off") \
        if model.domain is not None else "no domain check in this model"
    return (f"{info.name} {info.version or '(no version)'} · labels {', '.join(info.labels)} · "
            f"{info.spec.width}x{info.spec.height} px · {model.runtime} "
            f"{model.runtime_version} · REFER below {checks.min_confidence:.3f} · {domain}")


def calibration_status(info) -> str:
    """A site-calibrated model's line, as edge-classify prints it (edge-calibrate's
    status_line: name, figures, validated or NOT VALIDATED)."""
    from hemalite.edge.calibrate import status_line

    return status_line(info) or "not calibrated to a site"


def dataset_citation(info) -> str:
    """The dataset citation the model carries in its description (`hemalite convert` puts it
    after 'Data:'), so a model trained elsewhere shows its own."""
    text = info.description
    return text[text.index("Data:") + 5:].strip() if "Data:" in text else \
        "the model names no dataset"


def jpeg(rgb: np.ndarray, quality: int = 85) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(out, "JPEG", quality=quality)
    return out.getvalue()


@dataclass
class Entry:
    """One classified image of the session: its result and heatmap panel (JPEG, in memory)."""

    number: int
    result: Result
    heatmap: bytes | None = None

    @property
    def api(self) -> dict:
        """The JSON API's answer: edge-classify's JSONL fields, as it writes them."""
        line = dataclasses.asdict(self.result)
        return {name: line[name] for name in API_FIELDS}


@dataclass
class CaseEntry:
    """One case called in this session: edge-classify's --case-jsonl row, and its fields."""

    number: int
    row: dict
    fields: list[Entry]

    @property
    def counts(self) -> list[tuple[str, int]]:
        return [(k[len("accepted_"):], v) for k, v in self.row.items()
                if k.startswith("accepted_")]


class Session:
    """One server run: the model, the history (in memory, or saved when asked), the live feed.

    The interpreter is not thread-safe: uploads take turns on it (decoding overlaps); the
    live feed runs its own interpreter of the same file, so a camera never waits for uploads.
    """

    def __init__(self, config: ServeConfig, model: runtime.Model, checks: Checks):
        self.config, self.model, self.checks = config, model, dataclasses.replace(
            checks, heatmap_dir=None)  # heatmaps stay in memory, never a folder
        self.labels = model.info.labels
        self.started = time.strftime("%Y%m%d-%H%M%S")
        self._lock = threading.Lock()
        self._saved = None
        if config.save_dir:
            results = os.path.join(config.save_dir, "results")
            self._saved = ResultWriter(results + ".csv", results + ".jsonl")
            write_config(self.classify_config(), results + ".csv")
        # the case rule, resolved as edge-classify --cases resolves it (the same note)
        self.case_rule, self.case_rule_text, self.case_note = edge_cases.case_rule(
            model, config.case_min_fields, config.case_max_discordance)
        self._reset()
        self.live = LiveFeed(self, runtime.load_model(model.path, model.num_threads,
                                                      model.runtime)) if config.live else None

    def _reset(self) -> None:
        self.entries: list[Entry] = []
        self.case_batches: list[list[CaseEntry]] = []
        self.summary = Summary(self.labels)
        self._csv, self._jsonl = MemoryFile(name="history.csv"), MemoryFile(name="history.jsonl")
        self._writer = ResultWriter(self._csv.path, self._jsonl.path)

    def classify_config(self) -> ClassifyConfig:
        """How the results were made, in edge-classify's terms (results.config.json)."""
        c = self.config
        return ClassifyConfig(self.model.path, (), None, ".", c.camera, c.video, c.picamera,
                              c.top_k, c.min_confidence, self.checks.min_confidence,
                              self.checks.domain_check, None, self.model.num_threads,
                              self.model.runtime)

    def classify_upload(self, data: bytes, name: str | None, rooted: bool = True) -> Entry:
        """Decode and classify one uploaded image; a bad one is an entry with its error line,
        as edge-classify gives a bad file (the caller answers 400). `rooted`: see
        upload_truth."""
        with self._lock:
            number = len(self.entries) + 1
        source = upload_name(name, number)
        try:
            pixels = preprocess(decode(data, self.model.info.spec), self.model.info.spec)
        except ImageError as err:
            return self._record(Result(source, error=str(err)), data=data)
        return self._classify(pixels, source, upload_truth(source, self.labels, rooted),
                              data=data)

    def call_cases(self, fields: list[tuple[str, Entry]], folder: str,
                   seen=()) -> tuple[list[CaseEntry], int]:
        """(one call per case, images in no case) for classified uploads given with their
        paths relative to the folder chosen (`folder`, its name): grouped as edge-classify
        --cases groups a folder, called by its call_group from the fields' results as they
        were decided (never re-run), each a --case-jsonl row (edge.cases.case_row)."""
        groups, loose = group_uploads(fields, seen)
        made = []
        for name, entries in groups:
            results = [e.result for e in entries]
            for result in results:
                result.case = name
            call = edge_cases.call_group(results, self.labels, self.case_rule)
            row = edge_cases.case_row(edge_cases.CaseGroup(folder, name), call, self.labels,
                                      edge_cases.case_truth(results))
            made.append((row, entries))
        with self._lock:
            first = sum(len(b) for b in self.case_batches) + 1
            batch = [CaseEntry(first + i, row, entries) for i, (row, entries) in enumerate(made)]
            if batch:
                self.case_batches.append(batch)
        return batch, loose

    def recent_cases(self) -> list[CaseEntry]:
        """The session's case calls, the newest upload's first (its cases in their order)."""
        with self._lock:
            return [c for batch in self.case_batches[::-1] for c in batch]

    def classify_frame(self, rgb: np.ndarray, source: str, time_s: float | None) -> Entry:
        """A live frame kept in the history: classified as an image, by the same path."""
        return self._classify(preprocess(rgb, self.model.info.spec), source, None,
                              time_s=time_s, frame=rgb)

    def _classify(self, pixels: np.ndarray, source: str, truth: str | None, **keep) -> Entry:
        with self._lock:
            result = classify(self.model, pixels, self.summary, self.config.top_k, self.checks,
                              source)
            cam = image_cam(self.model, pixels)  # its own maps, not a probe's
        result.truth, result.time_s = truth, keep.pop("time_s", None)
        panel = None
        if cam is not None:  # as edge-classify --heatmaps draws it, on what the model saw
            panel = jpeg(heatmap_panel(pixels, pixels, cam, self.labels.index(result.guess),
                                       visible=visible_mask(self.model, pixels)))
        return self._record(result, panel, **keep)

    def _record(self, result: Result, heatmap: bytes | None = None, data: bytes | None = None,
                frame: np.ndarray | None = None) -> Entry:
        with self._lock:
            entry = Entry(len(self.entries) + 1, result, heatmap)
            self.entries.append(entry)
            self.summary.add(result)
            self._writer.write(result)
            if self._saved:
                self._save(entry, data, frame)
        return entry

    def _save(self, entry: Entry, data: bytes | None, frame: np.ndarray | None) -> None:
        """Saving on: the upload as received, the heatmap panel and the result row, under
        names made here (never the browser's), in save_dir only."""
        from hemalite.files import write_bytes

        stem = f"{entry.number:05d}-" + "".join(
            c if c.isalnum() or c in "._-" else "_"
            for c in os.path.basename(entry.result.source))[-80:]
        folder = self.config.save_dir
        if data is not None:
            write_bytes(os.path.join(folder, "uploads", stem), data)
        if frame is not None:
            write_bytes(os.path.join(folder, "uploads", stem + ".jpg"), jpeg(frame, 95))
        if entry.heatmap is not None:
            write_bytes(os.path.join(folder, "heatmaps", stem + ".heatmap.jpg"), entry.heatmap)
        self._saved.write(entry.result)

    def entry(self, number: int) -> Entry | None:
        with self._lock:
            return self.entries[number - 1] if 0 < number <= len(self.entries) else None

    def recent(self) -> list[Entry]:
        """The history, newest first."""
        with self._lock:
            return self.entries[::-1]

    def history(self, kind: str = "csv") -> bytes:
        """The session's results as edge-classify's --csv (or --jsonl) writes them."""
        with self._lock:
            return (self._csv if kind == "csv" else self._jsonl).read()

    def summary_text(self) -> str:
        with self._lock:
            return self.summary.text() if self.summary.n else "nothing classified yet"

    def clear(self) -> None:
        """Forget the history (what saving kept on disk stays there)."""
        with self._lock:
            self._close_history()
            self._reset()

    def _close_history(self) -> None:
        self._writer.close()
        self._csv.close()
        self._jsonl.close()

    def close(self) -> None:
        if self.live:
            self.live.stop()
        with self._lock:
            self._close_history()
            if self._saved:
                self._saved.close()


@dataclass(frozen=True)
class LiveFrame:
    """The newest classified frame, drawn once for every viewer."""

    version: int
    index: int
    result: Result
    fps: float
    rgb: np.ndarray
    jpeg: bytes
    heat_jpeg: bytes | None = None


class LiveFeed:
    """The camera or video through edge-classify's frame loop (live.classify_frames), in a
    thread, with its own interpreter. It reads the source only while a page watched it in
    the last `idle_s` seconds (a Pi's CPU is not spent on an empty room); a video plays in a
    loop at its own frame rate (frame numbers and time_s run on across the loops)."""

    def __init__(self, session: Session, model: runtime.Model):
        c = session.config
        self.session, self.model, self.config = session, model, c
        self.name = live.frame_source(c.camera, c.picamera, c.video)  # results' source
        self.title = (f"video {os.path.basename(c.video)}" if c.video else
                      "Raspberry Pi camera" if c.picamera else f"camera {c.camera}")
        self.error: str | None = None
        self._latest: LiveFrame | None = None
        self._changed = threading.Condition()
        self._seen = self._heat_seen = 0.0
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hemalite-live", daemon=True)
        self._thread.start()

    def watch(self, heatmap: bool = False) -> None:
        """A page is looking (the stream or the status): read the source."""
        now = time.monotonic()
        with self._changed:
            self._seen = now
            if heatmap:
                self._heat_seen = now
            self._changed.notify_all()

    def _watched(self, since: float) -> bool:
        return time.monotonic() - since < self.config.idle_s

    def latest(self) -> LiveFrame | None:
        return self._latest

    def wait_newer(self, version: int, timeout: float) -> LiveFrame | None:
        """The newest frame once it is newer than `version` (None after `timeout`)."""
        with self._changed:
            self._changed.wait_for(lambda: self._stopping.is_set() or (
                self._latest is not None and self._latest.version > version), timeout)
            latest = self._latest
        return latest if latest is not None and latest.version > version else None

    @property
    def stopped(self) -> bool:
        return self._stopping.is_set()

    def stop(self) -> None:
        self._stopping.set()
        with self._changed:
            self._changed.notify_all()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        c, version = self.config, 0
        fps = sources.video_fps(c.video) if c.video else None
        while not self._stopping.is_set():
            with self._changed:  # sleep until a page watches
                self._changed.wait_for(lambda: self._stopping.is_set()
                                       or self._watched(self._seen), timeout=1.0)
            if self._stopping.is_set() or not self._watched(self._seen):
                continue
            shown = _Latest(self._paced(self._frames(), fps))
            summary = Summary(self.model.info.labels)
            try:
                for frame in live.classify_frames(self.model, shown, self.name, summary,
                                                  c.top_k, self.session.checks,
                                                  live.Display(), fps):
                    version += 1
                    self._publish(version, frame, shown.rgb)
                    self.error = None
                if summary.n == 0 and self._watched(self._seen):
                    raise sources.SourceError("the source delivered no frames")
            except sources.SourceError as err:
                self.error = str(err)
                self._stopping.wait(3.0)  # a camera unplugged: try again while watched

    def _frames(self) -> Iterator[np.ndarray]:
        """The source's RGB frames; a video file starts again at its end, so that the frame
        numbers and the FPS run on as for a camera."""
        c = self.config
        while True:
            delivered = 0
            for delivered, rgb in enumerate(live.open_frames(c.camera, c.picamera, c.video), 1):
                yield rgb
            if not c.video or not delivered:
                return

    def _paced(self, frames: Iterator[np.ndarray], fps: float | None) -> Iterator[np.ndarray]:
        """The source's frames while watched; a video file at its own frame rate."""
        start = time.monotonic()
        try:
            for n, rgb in enumerate(frames):
                if self._stopping.is_set() or not self._watched(self._seen):
                    return
                if fps:
                    self._stopping.wait(max(0.0, start + n / fps - time.monotonic()))
                yield rgb
        finally:
            frames.close()

    def _publish(self, version: int, frame: live.Frame, rgb: np.ndarray) -> None:
        text = live.frame_text(frame.result)
        plain = jpeg(sources.overlay(rgb, text, frame.fps)[..., ::-1])
        heat = None
        if self._watched(self._heat_seen):  # live_heatmap invokes the frame again
            shown = live.live_heatmap(self.model, rgb, preprocess(rgb, self.model.info.spec))
            heat = jpeg(sources.overlay(shown, text, frame.fps)[..., ::-1])
        with self._changed:
            self._latest = LiveFrame(version, frame.index, frame.result, frame.fps, rgb, plain,
                                     heat)
            self._changed.notify_all()

    def status(self) -> dict:
        """GET /api/live: the newest frame's result, edge-classify's fields and the FPS."""
        latest = self._latest
        state = {"source": self.name, "error": self.error, "frame": None, "fps": None}
        if latest is None:
            return state
        line = dataclasses.asdict(latest.result)
        return {**state, **{k: line[k] for k in (*API_FIELDS, "time_s")},
                "frame": latest.index, "fps": round(latest.fps, 2),
                "text": live.frame_text(latest.result), "refer": latest.result.label == REFER}

    def keep(self) -> Entry | None:
        """Put the newest frame into the history (classified as an image, same path)."""
        latest = self._latest
        if latest is None:
            return None
        return self.session.classify_frame(latest.rgb, latest.result.source,
                                           latest.result.time_s)


class _Latest:
    """Wraps a frame iterator and remembers the frame it last gave out: the one
    classify_frames has just classified when it yields."""

    def __init__(self, frames: Iterator[np.ndarray]):
        self._frames, self.rgb = frames, None

    def __iter__(self):
        return self

    def __next__(self) -> np.ndarray:
        self.rgb = next(self._frames)
        return self.rgb
