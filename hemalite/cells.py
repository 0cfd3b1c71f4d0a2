"""Where the leukocytes are: the stain mask every stage shares.

Wright-Giemsa stains leukocyte nuclei purple to magenta: red and blue both clearly above
green. Red cells (grey-blue or pink-grey) and the pale background are not. So the stain
score of a pixel is `min(R, B) - G`, and a steep ramp turns it into a mask:

    m = clip((min(R, B) - G - THRESHOLD) / RAMP, 0, 1), dilated by a DILATE x DILATE max

The same arithmetic runs in three places and must agree: here in numpy (the audit, the
edge's "no leukocyte" check, heatmap outlines), inside the Keras model as the `Ground`
layer (hemalite.train.model), and so inside every .tflite hemalite exports. Written as
arithmetic (subtract, clip, max-pool, multiply-add), not comparisons, because comparison
ops convert to int8 but abort LiteRT at invoke (shared/STYLE.md).

The scale-bar annotation in the bottom-right corner of the dataset (red ink: R far above
B; black on white) scores low, so it falls outside the mask. Measured on 80 all4 images
(20 per class): the mask covers 16 % of an image, and under the audit's photometric shifts
it keeps an intersection-over-union of 0.83-0.99 with the unshifted mask.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FLOOR = 20.0  # stain scores below this are never leukocyte, whatever the image
RELATIVE = 0.45  # ... and the threshold is this fraction of the image's strongest stain
RAMP = 12.0  # the mask goes from 0 to 1 over this many score units above the threshold
SMOOTH = 5  # the strongest stain is read after a SMOOTH x SMOOTH mean (one pixel is noise)
RED_TEXT = 30.0  # R - B beyond this is red ink (the scale bar), not Wright-Giemsa stain
ERODE = 3  # pixels (odd): a min-pool first removes strokes of text and JPEG fringes
DILATE = 9  # pixels (odd): then a max-pool grows the blobs back and adds the cytoplasm rim
BACKGROUND = 128.0  # the one grey everything outside the mask becomes
MIN_CELL_PIXELS = 200  # blobs smaller than this (dilated) are platelets or specks: a cell is 250-1000


def stain_score(rgb: np.ndarray) -> np.ndarray:
    """(R + B) / 2 - G - relu(R - B - RED_TEXT) per pixel, float32 (H, W)."""
    x = rgb.astype(np.float32)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    return (r + b) / 2 - g - np.maximum(r - b - RED_TEXT, 0.0)


def _pool(a: np.ndarray, size: int, reduce) -> np.ndarray:
    """size x size max or mean over a 2-D float32 array, 'same' output, as MAX_POOL_2D and
    AVERAGE_POOL_2D compute it (padding ignored: a border mean counts valid pixels only).
    OpenCV's filters do it in a millisecond where numpy windows took a hundred."""
    import cv2

    a = np.ascontiguousarray(a, dtype=np.float32)
    if reduce is np.max:  # dilate's default border never wins a max, like MAX_POOL's padding
        return cv2.dilate(a, np.ones((size, size), np.uint8))
    box = dict(ksize=(size, size), normalize=False, borderType=cv2.BORDER_CONSTANT)
    return cv2.boxFilter(a, -1, **box) / cv2.boxFilter(np.ones_like(a), -1, **box)


def stain_threshold(score: np.ndarray) -> float:
    """FLOOR, or RELATIVE x the image's strongest (smoothed) stain when that is higher.

    Relative, so a paler stain, a dimmer lamp or lower contrast scale the threshold with
    the cells instead of losing them.
    """
    return max(FLOOR, RELATIVE * float(_pool(score, SMOOTH, np.mean).max()))


def soft_mask(rgb: np.ndarray) -> np.ndarray:
    """The dilated stain mask in [0, 1], float32 (H, W): exactly what the model applies."""
    score = stain_score(rgb)
    ramp = np.clip((score - stain_threshold(score)) / RAMP, 0.0, 1.0)
    eroded = 1.0 - _pool(1.0 - ramp, ERODE, np.max)  # min-pool written as a max-pool
    return _pool(eroded, DILATE, np.max)


def leukocyte_mask(rgb: np.ndarray) -> np.ndarray:
    """Boolean (H, W): True on the stained leukocytes and their rim."""
    return soft_mask(rgb) >= 0.5


def neutralise_background(rgb: np.ndarray) -> np.ndarray:
    """The image the model sees: pixels inside the mask kept, the rest set to BACKGROUND."""
    m = soft_mask(rgb)[..., None]
    out = rgb.astype(np.float32) * m + BACKGROUND * (1.0 - m)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class Cell:
    """One stained blob: its bounding box (x, y, width, height) and area in pixels."""

    x: int
    y: int
    width: int
    height: int
    area: int


def find_cells(rgb: np.ndarray, min_pixels: int = MIN_CELL_PIXELS,
               mask: np.ndarray | None = None) -> list[Cell]:
    """The leukocytes of an image as connected blobs of the mask, largest first.

    Blobs under `min_pixels` (platelets, dust, stray stain) are dropped. Touching cells
    merge into one blob: this counts stained regions, not a cytologist's cell count.
    Pass `mask` when it is already computed (leukocyte_mask of the same image).
    """
    import cv2  # in the edge install already; the only use of OpenCV in the core

    mask = (leukocyte_mask(rgb) if mask is None else mask).astype(np.uint8)
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    cells = [Cell(*(int(v) for v in stats[i, :5])) for i in range(1, count)
             if stats[i, cv2.CC_STAT_AREA] >= min_pixels]
    return sorted(cells, key=lambda c: -c.area)
