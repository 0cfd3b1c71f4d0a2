"""Where images come from: paths (files, folders, globs), cameras, video files.

Every source yields RGB uint8: colour is fixed here, at the I/O boundary, once. This is the
only module that imports OpenCV for I/O (and only when a camera or video is used). OpenCV is
its headless wheel (no Qt, no GUI: 126 MB less than opencv-python's on x86-64), so the live
window is Tkinter's, showing each frame through Pillow's ImageTk.
"""
from __future__ import annotations

import glob
import logging
import os
import time
from collections.abc import Iterator

import numpy as np

from hemalite.contract import is_image_name
from hemalite.errors import HemaliteError

log = logging.getLogger(__name__)


class SourceError(HemaliteError):
    """A camera or video that cannot be opened or stops delivering frames."""


def display_name(path: str | os.PathLike) -> str:
    """A printable form of any file name, including names that are not valid UTF-8."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def iter_paths(inputs: list[str]) -> Iterator[str]:
    """Expand files, folders (recursively, following links but never looping) and globs.

    Explicit files are yielded whatever their extension (a bad one gets its error line);
    inside folders only names with an image extension are taken.
    """
    for path, _ in find_images(inputs):
        yield path


def find_images(inputs: list[str]) -> Iterator[tuple[str, str | None]]:
    """iter_paths, with the folder each image was found under: (path, root).

    root is the folder given (or matched by a glob), None for a file named directly; the
    ground truth is the class folder directly under root, at any depth, as in training.
    """
    seen_dirs: set[tuple[int, int]] = set()
    for item in inputs:
        if os.path.isdir(item):
            yield from ((path, item) for path in _walk(item, seen_dirs))
        elif os.path.lexists(item) or not glob.has_magic(item):
            yield item, None  # a file, a broken link, a FIFO or a missing path: the runner says why
        else:
            for match in sorted(glob.glob(item, recursive=True)):
                if os.path.isdir(match):
                    yield from ((path, match) for path in _walk(match, seen_dirs))
                else:
                    yield match, None


def folders(inputs: list[str]) -> list[str]:
    """The folders find_images searches for these inputs (given, or matched by a glob), in
    its order: the roots whose immediate sub-folders `edge-classify --cases` calls cases."""
    found = []
    for item in inputs:
        if os.path.isdir(item):
            found.append(item)
        elif not os.path.lexists(item) and glob.has_magic(item):
            found += [m for m in sorted(glob.glob(item, recursive=True)) if os.path.isdir(m)]
    return found


def manifest_paths(manifest: str, root: str = ".") -> list[str]:
    """The 'path' column of a CSV manifest (as written by `hemalite train`), joined to root."""
    import csv

    with open(manifest, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if "path" not in (reader.fieldnames or []):
            raise SourceError(f"{manifest}: no 'path' column")
        return [os.path.join(root, row["path"]) for row in reader]


def _walk(root: str, seen: set[tuple[int, int]]) -> Iterator[str]:
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        st = os.stat(dirpath)
        if (st.st_dev, st.st_ino) in seen:  # a symlink loop or a second link to a folder
            dirnames[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirnames.sort()
        for name in sorted(filenames):
            if is_image_name(name):
                yield os.path.join(dirpath, name)


def _cv2():
    """OpenCV, imported here only, with its own log lines off unless --verbose: a camera
    that cannot be opened is one SourceError line, not ~11 lines from every backend tried."""
    import cv2

    if not log.isEnabledFor(logging.INFO):
        if hasattr(cv2.utils, "logging"):  # OpenCV 5
            cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
        else:  # OpenCV 4.x: what pip picks beside numpy<2 (a Pi with apt's Picamera2)
            cv2.setLogLevel(0)  # LOG_LEVEL_SILENT
    return cv2


def parse_camera(value: str) -> int | str:
    """'0' -> 0 (camera index); '/dev/video2' or a file stays a path."""
    return int(value) if value.isdigit() else value


def opencv_frames(source: int | str, live: bool, retries: int = 5,
                  retry_wait: float = 0.2) -> Iterator[np.ndarray]:
    """Frames from cv2.VideoCapture (V4L2 on Linux) as RGB uint8, converted once here.

    A video file ends at its last frame. A live camera that stops delivering frames is
    retried `retries` times, then SourceError.
    """
    cv2 = _cv2()
    capture = cv2.VideoCapture(source)
    if not capture.isOpened():
        raise SourceError(f"cannot open {'camera' if live else 'video'} {source!r}")
    failures = 0
    try:
        while True:
            ok, frame = capture.read()
            if ok:
                failures = 0
                yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                continue
            if not live:
                return
            failures += 1
            if failures > retries:
                raise SourceError(f"camera {source!r} stopped delivering frames "
                                  f"({retries} retries)")
            time.sleep(retry_wait)
    finally:
        capture.release()


def video_fps(path: str) -> float | None:
    """Frames per second a video file declares (None when it declares none)."""
    cv2 = _cv2()
    capture = cv2.VideoCapture(path)
    try:
        fps = capture.get(cv2.CAP_PROP_FPS) if capture.isOpened() else 0.0
    finally:
        capture.release()
    return fps if fps and fps > 0 else None


def picamera_frames(size: tuple[int, int] = (640, 480)) -> Iterator[np.ndarray]:
    """Frames from the Raspberry Pi camera stack (Picamera2) as RGB uint8.

    libcamera names formats by register order: 'BGR888' arrives as [R, G, B] per pixel in
    numpy (picamera2 issue #843), which is the order hemalite wants.
    """
    try:
        from picamera2 import Picamera2
    except ImportError:
        raise SourceError("--picamera needs the picamera2 module (Raspberry Pi OS: "
                          "sudo apt install python3-picamera2)") from None
    camera = Picamera2()
    camera.configure(camera.create_preview_configuration(main={"format": "BGR888",
                                                               "size": size}))
    camera.start()
    try:
        while True:
            yield np.ascontiguousarray(camera.capture_array()[:, :, :3])
    finally:
        camera.stop()


def window_problem() -> str | None:
    """Why no live window can be shown here, or None when it can.

    The window is Tk's, which on Linux needs an X server that answers at DISPLAY (a
    Wayland desktop such as Raspberry Pi OS's provides one, XWayland), and Python's tkinter
    (Raspberry Pi OS with desktop has it; elsewhere the python3-tk package).
    """
    if os.name == "posix" and os.uname().sysname != "Darwin":
        display = os.environ.get("DISPLAY", "")
        if not display:
            return "DISPLAY is not set"
        if not x_server_answers(display):
            return f"no X server answers at DISPLAY={display}"
    try:
        import tkinter  # noqa: F401
        from PIL import ImageTk  # noqa: F401
    except ImportError as err:
        return f"the window needs tkinter ({err}; Debian and Raspberry Pi OS: python3-tk)"
    return None


def x_server_answers(display: str, timeout: float = 1.0) -> bool:
    """True when something accepts a connection at the X display (':0', 'host:10.0')."""
    import socket

    host, _, rest = display.rpartition(":")
    number = rest.split(".")[0]
    if not number.isdigit():
        return False
    if host in ("", "unix"):
        targets = [(socket.AF_UNIX, path) for path in
                   (f"\0/tmp/.X11-unix/X{number}", f"/tmp/.X11-unix/X{number}")]
    else:
        targets = [(socket.AF_INET, (host, 6000 + int(number)))]
    for family, address in targets:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            try:
                sock.connect(address)
                return True
            except OSError:
                continue
    return False


def overlay(rgb: np.ndarray, text: str, fps: float) -> np.ndarray:
    """A BGR copy of the frame with the label, probability (and, for a fault at the
    microscope, what to fix: the text's second line) and FPS drawn on it.

    Each line sits on its own black band, so it reads on any smear and never overlaps
    the next, down to 224-px frames.
    """
    cv2 = _cv2()
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, max(0.4, bgr.shape[1] / 900)
    thickness, pad, top = max(1, round(scale * 1.5)), max(2, round(6 * scale)), 0
    for line in (*text.split("\n"), f"{fps:.1f} FPS"):
        (width, height), baseline = cv2.getTextSize(line, font, scale, thickness)
        bottom = top + height + baseline + 2 * pad
        cv2.rectangle(bgr, (0, top), (width + 2 * pad, bottom), (0, 0, 0), cv2.FILLED)
        cv2.putText(bgr, line, (pad, top + pad + height), font, scale, (255, 255, 255),
                    thickness, cv2.LINE_AA)
        top = bottom
    return bgr


def save_frame(bgr: np.ndarray, path: str) -> None:
    cv2 = _cv2()
    if not cv2.imwrite(path, bgr):
        raise SourceError(f"cannot write {path}")


def show(bgr: np.ndarray, title: str = "hemalite") -> bool:
    """Show a frame (BGR, as overlay() draws it) in the live window, opened on the first
    call; False once the user closed the window or pressed q or Esc."""
    global _window
    if _window is None:
        _window = LiveWindow(title)
    return _window.show(np.ascontiguousarray(bgr[:, :, ::-1]))


def close_windows() -> None:
    """Close the live window, if one is open."""
    global _window
    if _window is not None:
        _window.destroy()
        _window = None


class LiveWindow:
    """One Tk window showing RGB frames: the frame as it is (no scaling), closed by its
    close button, q or Esc. Tk runs in the caller's thread: show() draws the frame and
    handles the events that came in since the last frame."""

    def __init__(self, title: str = "hemalite"):
        import tkinter

        self.root = tkinter.Tk()
        self.root.title(title)
        self.label = tkinter.Label(self.root, borderwidth=0, highlightthickness=0)
        self.label.pack()
        self.is_open = True
        self.photo = None  # Tk keeps no reference to the image it shows
        self.root.protocol("WM_DELETE_WINDOW", self.close)
        for key in ("<KeyPress-q>", "<KeyPress-Q>", "<Escape>"):
            self.root.bind(key, lambda _event: self.close())

    def show(self, rgb: np.ndarray) -> bool:
        """Draw an RGB uint8 frame; False once the window was closed."""
        from PIL import Image, ImageTk

        if self.is_open:
            self.photo = ImageTk.PhotoImage(Image.fromarray(rgb), master=self.root)
            self.label.configure(image=self.photo)
            self.root.update()
        return self.is_open

    def close(self) -> None:
        self.is_open = False

    def destroy(self) -> None:
        self.is_open = False
        self.root.destroy()


_window: LiveWindow | None = None
