"""Where the leukocytes are: the stain mask every stage shares.

Wright-Giemsa stains leukocyte nuclei purple to magenta: red and blue both clearly above
green. Red cells (grey-blue or pink-grey) and the pale background are not. So the stain
score of a pixel is `(R + B) / 2 - G` (minus a penalty for red ink), and a steep ramp turns
it into a mask. The mask is computed on BLOCK x BLOCK block means (56 x 56 for a 224-px
image), where it costs a sixteenth of the pixel operations:

    s = block mean of (R + B) / 2 - G  -  relu(block mean of (R - B) - RED_TEXT)
    m = clip((s - max(FLOOR, RELATIVE x max s)) / RAMP, 0, 1), then a 3 x 3 block max
    mask = m upsampled bilinearly (half-pixel centres) to the image's size

The block mean is the smoothing (one pixel is noise), the 3 x 3 max over blocks adds the
cytoplasm rim (one block, 4 px, each side), and the bilinear upsampling gives the mask a
soft edge. Thin strokes of text and JPEG fringes vanish in a block mean, so no erosion is
needed. Measured in session 14 (benchmarks/reports/profile/): at full resolution the mask's
one-channel pools took 7.7 ms of a 15 ms int8 invoke, and they run on one thread whatever
the interpreter's count; on block means the whole layer takes about 0.7 ms.

The same arithmetic runs in three places and must agree: here in numpy (the audit, the
edge's "no leukocyte" check, heatmap outlines), inside the Keras model as the `Ground`
layer (hemalite.train.model), and so inside every .tflite hemalite exports. Written as
arithmetic (subtract, clip, pools, resize, multiply-add), not comparisons, because
comparison ops convert to int8 but abort LiteRT at invoke (shared/STYLE.md).

The scale-bar annotation in the bottom-right corner of the dataset (red ink: R far above
B; black on white) scores low, so it falls outside the mask.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FLOOR = 20.0  # stain scores below this are never leukocyte, whatever the image
RELATIVE = 0.45  # ... and the threshold is this fraction of the image's strongest stain
RAMP = 12.0  # the mask goes from 0 to 1 over this many score units above the threshold
RED_TEXT = 30.0  # R - B beyond this is red ink (the scale bar), not Wright-Giemsa stain
BLOCK = 4  # pixels: the mask is computed on BLOCK x BLOCK block means (sides divisible by it)
RIM = 3  # blocks (odd): a RIM x RIM max over blocks adds the cytoplasm rim
BACKGROUND = 128.0  # the one grey everything outside the mask becomes
MIN_CELL_PIXELS = 128  # core blobs smaller than this (8 blocks) are platelets or specks: a
#                        leukocyte's core is 250-450 px in a 224-px all4 image


def stain_score(rgb: np.ndarray) -> np.ndarray:
    """(R + B) / 2 - G - relu(R - B - RED_TEXT) per pixel, float32 (H, W)."""
    x = rgb.astype(np.float32)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    return (r + b) / 2 - g - np.maximum(r - b - RED_TEXT, 0.0)


def block_means(rgb: np.ndarray) -> np.ndarray:
    """(H / BLOCK, W / BLOCK, 3) float32 means of BLOCK x BLOCK blocks (AVERAGE_POOL_2D
    with stride BLOCK); a remainder at the right or bottom edge is dropped, as 'valid'
    pooling drops it. OpenCV's area resize of a whole-block crop is exactly the block mean,
    twenty times faster than numpy's."""
    import cv2

    h, w = rgb.shape[0] // BLOCK, rgb.shape[1] // BLOCK
    crop = np.ascontiguousarray(rgb[:h * BLOCK, :w * BLOCK], dtype=np.float32)
    return cv2.resize(crop, (w, h), interpolation=cv2.INTER_AREA)


def block_score(means: np.ndarray) -> np.ndarray:
    """The stain score of block means (H / BLOCK, W / BLOCK)."""
    r, g, b = means[..., 0], means[..., 1], means[..., 2]
    return (r + b) * 0.5 - g - np.maximum(r - b - RED_TEXT, 0.0)


def block_ramp(rgb: np.ndarray, score: np.ndarray | None = None) -> np.ndarray:
    """The stain ramp on blocks, in [0, 1], before the rim: the cells' cores
    (H / BLOCK, W / BLOCK) float32. Pass `score` when it is already computed
    (block_score of the same image's block_means)."""
    score = block_score(block_means(rgb)) if score is None else score
    threshold = max(FLOOR, RELATIVE * float(score.max())) if score.size else FLOOR
    return np.clip((score - threshold) * (1.0 / RAMP), 0.0, 1.0).astype(np.float32)


def block_mask(rgb: np.ndarray, ramp: np.ndarray | None = None) -> np.ndarray:
    """The mask on blocks, in [0, 1], before upsampling: the ramp with its rim."""
    import cv2  # in the edge install already

    ramp = block_ramp(rgb) if ramp is None else ramp
    # dilate's default border never wins a max, like MAX_POOL_2D's 'same' padding
    return cv2.dilate(ramp, np.ones((RIM, RIM), np.uint8))


def upsample(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize with half-pixel centres and clamped borders, as RESIZE_BILINEAR
    (half_pixel_centers) computes it inside the model; float32 (height, width)."""
    import cv2

    return cv2.resize(mask, (width, height), interpolation=cv2.INTER_LINEAR)


def soft_mask(rgb: np.ndarray) -> np.ndarray:
    """The stain mask in [0, 1], float32 (H, W): exactly what the model applies."""
    return upsample(block_mask(rgb), *rgb.shape[:2])


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
               ramp: np.ndarray | None = None) -> list[Cell]:
    """The leukocytes of an image as connected blobs of the mask's cores (the block ramp at
    0.5 or more, before the rim is added, so that neighbours stay apart), largest first, in
    the image's pixels.

    Blobs under `min_pixels` (platelets, dust, stray stain) are dropped. Touching cells
    merge into one blob: this counts stained regions, not a cytologist's cell count.
    Pass `ramp` when it is already computed (block_ramp of the same image).
    """
    import cv2  # in the edge install already

    ramp = block_ramp(rgb) if ramp is None else ramp
    count, _, stats, _ = cv2.connectedComponentsWithStats((ramp >= 0.5).astype(np.uint8),
                                                          connectivity=8)
    found = [Cell(*(int(v) * BLOCK for v in stats[i, :4]), int(stats[i, 4]) * BLOCK ** 2)
             for i in range(1, count)]
    return sorted([c for c in found if c.area >= min_pixels], key=lambda c: -c.area)
