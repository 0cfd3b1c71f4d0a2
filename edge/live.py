"""The camera / video loop: frames() -> classify() -> overlay(), without click.

`classify_frames` yields each frame's Result as it is made (the caller prints and writes
it), then draws the overlay, saves every N-th annotated frame and shows the live window.
"""
from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from hemalite import acquisition
from hemalite.contract import preprocess
from hemalite.edge import sources
from hemalite.edge.classify import Checks, Result, Summary, classify
from hemalite.edge.runtime import Model


@dataclass(frozen=True)
class Display:
    """Where the annotated frames go: a window, a folder (every N-th frame), or nowhere."""

    window: bool = False
    save_dir: str | None = None
    every: int = 30  # report (print and save) every N-th frame, and the first
    max_frames: int = 0  # 0 = until the source ends


@dataclass(frozen=True)
class Frame:
    """One classified frame: its number (from 1), result, running FPS and whether it is
    one to report (the first and every N-th)."""

    index: int
    result: Result
    fps: float
    report: bool


def frame_source(camera, picamera: bool, video: str | None) -> str:
    """How frames are named in the results: the video file, the camera, or picamera."""
    return "picamera" if picamera else (video if video else f"camera {camera}")


def open_frames(camera, picamera: bool, video: str | None) -> Iterator[np.ndarray]:
    """RGB uint8 frames from the Pi camera, a video file or an OpenCV camera."""
    if picamera:
        return sources.picamera_frames()
    if video:
        return sources.opencv_frames(video, live=False)
    return sources.opencv_frames(sources.parse_camera(camera), live=True)


def classify_frames(model: Model, frames: Iterator[np.ndarray], name: str, summary: Summary,
                    top_k: int, checks: Checks, display: Display,
                    video_fps: float | None = None) -> Iterator[Frame]:
    """Classify each frame, add it to `summary` and yield it; then overlay, save, show.

    Stops at the source's end, after `display.max_frames`, or when the window is closed.
    """
    if display.save_dir:
        os.makedirs(display.save_dir, exist_ok=True)
    live_checks = dataclasses.replace(checks, heatmap_dir=None)  # no file per frame
    start = time.perf_counter()
    try:
        for index, rgb in enumerate(frames, start=1):
            pixels = preprocess(rgb, model.info.spec)
            result = classify(model, pixels, summary, top_k, live_checks,
                              f"{name} frame {index}")
            # time: the frame's position in the video, or seconds since the camera started
            at = (index - 1) / video_fps if video_fps else time.perf_counter() - start
            result.time_s = round(at, 3)
            summary.add(result)
            summary.wall_s = time.perf_counter() - start
            frame = Frame(index, result, index / summary.wall_s,
                          index % display.every == 0 or index == 1)
            yield frame
            if not _draw(model, rgb, pixels, frame, checks, display):
                break
            if display.max_frames and index >= display.max_frames:
                break
    finally:
        if display.window:
            sources.close_windows()


def frame_text(result) -> str:
    """What a live frame says (the window, the saved frames, `hemalite serve`'s page): the
    label, or REFER with its reason and best guess, and for a fault at the microscope what to
    fix on a second line, live, while the technician adjusts."""
    text = (f"REFER {result.reason} ({result.guess} {result.probability:.2f})"
            if result.reason else f"{result.label} {result.probability:.2f}")
    if result.reason in acquisition.REASONS:
        text += "\n" + result.detail.split("; ")[0]
    return text


def _draw(model: Model, rgb: np.ndarray, pixels: np.ndarray, frame: Frame, checks: Checks,
          display: Display) -> bool:
    """Overlay, save and show one frame, only when used; False when the window was closed."""
    save = frame.report and display.save_dir
    if not (display.window or save):
        return True
    text = frame_text(frame.result)
    shown = live_heatmap(model, rgb, pixels) if checks.heatmap_dir is not None else rgb
    annotated = sources.overlay(shown, text, frame.fps)
    if save:
        sources.save_frame(annotated, os.path.join(display.save_dir,
                                                   f"frame_{frame.index:06d}.jpg"))
    return not display.window or sources.show(annotated)


def live_heatmap(model: Model, rgb: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """The frame with the predicted class's heatmap blended over it (its own maps: the last
    invoke may have been a probe's, on a zoomed or recoloured copy)."""
    from hemalite.edge.assess import heatmap_panel, image_cam, visible_mask

    cam = image_cam(model, pixels)
    if cam is None:
        return rgb
    label = int(model.get_scores().argmax())
    width = rgb.shape[1]
    panel = heatmap_panel(rgb, pixels, cam, label, visible=visible_mask(model, pixels))
    return panel[:, width:2 * width]
