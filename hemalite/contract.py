"""The input contract every stage shares: how an image becomes a model input.

Training, the representative dataset, the benchmarks and the edge runner all call
`load_image` and `preprocess` from here, so the pixels a model sees on a Raspberry Pi are
the pixels it was trained on. numpy + Pillow only: never TensorFlow.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from hemalite.errors import HemaliteError

# Pillow refuses images above this many pixels (its decompression-bomb guard raises past 2x).
Image.MAX_IMAGE_PIXELS = 64_000_000

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")

# Keras MobileNetV2 scaling, applied by a Rescaling layer *inside* the model:
# x / 127.5 - 1, written in TFLite metadata as (x - mean) / std.
NORM_MEAN = 127.5
NORM_STD = 127.5


@dataclass(frozen=True)
class InputSpec:
    """What a model expects: RGB uint8 pixels of this size, resized with this filter, after
    an optional zoom about the centre and an optional colour step (both set by a site
    calibration, `edge-calibrate`, to undo another lab's objective and stain colour; none
    for every model `hemalite convert` makes)."""

    height: int = 224
    width: int = 224
    resample: str = "bilinear"  # part of the contract: training and edge must agree
    zoom: float = 1.0  # > 1: the centre 1/zoom of the field, enlarged; < 1: the field shrunk
    #                    and mirrored out to the frame
    hue: float = 0.0  # degrees added to every pixel's HSV hue (another stain batch or white
    #                   balance turned back)
    saturation: float = 1.0  # colour saturation x this (Pillow's ImageEnhance.Color)

    @property
    def recolours(self) -> bool:
        return self.hue != 0.0 or self.saturation != 1.0

    @property
    def size(self) -> tuple[int, int]:
        return (self.width, self.height)


_RESAMPLE = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}


class ImageError(HemaliteError):
    """An input file that cannot be turned into an RGB image (one line, names the reason)."""


def is_image_name(path: str | os.PathLike) -> bool:
    """True when the file name has an image extension (case-insensitive)."""
    return os.fspath(path).lower().endswith(IMAGE_EXTENSIONS)


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow image (CMYK, L, LA, P, RGBA, I;16 ...) to 8-bit RGB.

    Transparency is composited on white (slides are white where nothing is stained);
    16-bit images are scaled down, not clipped.
    """
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(image, dtype=np.float64)
        top = 65535.0 if arr.max() > 255 else 255.0
        image = Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8))
    elif image.mode == "F":
        image = Image.fromarray(np.clip(np.asarray(image), 0, 255).astype(np.uint8))
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image.convert("RGBA"), mask=image.convert("RGBA").getchannel("A"))
        return background
    return image.convert("RGB")


def load_image(path: str | os.PathLike, spec: InputSpec | None = None) -> np.ndarray:
    """Decode an image file to an RGB uint8 array (H, W, 3), honouring EXIF rotation.

    With a spec, JPEG draft mode lets libjpeg decode at a reduced scale that is still at
    least the model's size (a big saving on large photos, no change on small ones).
    Raises ImageError with a one-line reason for anything that is not a readable image.
    """
    path = os.fspath(path)
    if not os.path.lexists(path):
        raise ImageError("no such file")
    if not os.path.isfile(path):  # a FIFO or a directory named like an image: never open it
        reason = "broken symlink" if os.path.islink(path) and not os.path.exists(path) else (
            "is a directory" if os.path.isdir(path) else "not a regular file")
        raise ImageError(reason)
    if os.path.getsize(path) == 0:
        raise ImageError("empty file (0 bytes)")
    try:
        with Image.open(path) as image:
            if spec is not None and image.format == "JPEG":  # enough for the zoom's crop too
                zoom = max(spec.zoom, 1.0)
                image.draft("RGB", (round(spec.width * zoom), round(spec.height * zoom)))
            image.seek(0)  # animated images: the first frame
            image = ImageOps.exif_transpose(image)
            return np.asarray(to_rgb(image), dtype=np.uint8)
    except Image.DecompressionBombError as err:
        raise ImageError(f"too large, refused as a decompression bomb ({err})") from None
    except (OSError, SyntaxError, ValueError) as err:  # Pillow's errors for bad image data
        reason = str(err)
        if "truncated" in reason:  # Pillow: "image file is truncated (27 bytes not processed)"
            reason = f"the file is damaged or incomplete ({reason})"
        raise ImageError(f"cannot decode image: {reason}") from None


def load_batch(paths, spec: InputSpec) -> tuple[np.ndarray, list[int], list[str]]:
    """Decode and preprocess many files: (N, H, W, 3) uint8, indices of the decoded ones,
    and one 'path: reason' line per file that failed (the others go on).

    `paths` may be any iterable, e.g. wrapped in a progress bar by the caller.
    """
    images, kept, failures = [], [], []
    for i, path in enumerate(paths):
        try:
            images.append(preprocess(load_image(path, spec), spec))
            kept.append(i)
        except ImageError as err:
            failures.append(f"{path}: {err}")
    pixels = np.stack(images) if images else np.zeros((0, spec.height, spec.width, 3), np.uint8)
    return pixels, kept, failures


def preprocess(rgb: np.ndarray, spec: InputSpec) -> np.ndarray:
    """Resize an RGB uint8 image to the model's input: (height, width, 3) uint8.

    The only resize in hemalite. Scaling to [-1, 1] is inside the model, so this returns
    raw pixels, exactly what a uint8 TFLite input or the Keras model takes. With a zoom
    (a calibrated site's objective undone) the centre 1/zoom of the image is what is
    resized (zoom > 1), or the image is resized to zoom x the model's size and mirrored
    out to fill it (zoom < 1: the wider field a lower magnification would have shown).
    With a colour step (a calibrated site's stain colour undone) the resized pixels' hue
    is turned and their saturation scaled (`recolour`).
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 array (H, W, 3), got {rgb.dtype} {rgb.shape}")
    out = _resize(rgb, spec)
    return recolour(out, spec.hue, spec.saturation) if spec.recolours else out


def recolour(rgb: np.ndarray, hue: float, saturation: float) -> np.ndarray:
    """The colour step: `hue` degrees added to the HSV hue, then the saturation x
    `saturation` (a blend with the pixel's grey, Pillow's ImageEnhance.Color). The inverse
    of a white-balance or stain-batch turn and of a paler or stronger stain."""
    image = Image.fromarray(np.ascontiguousarray(rgb))
    if hue:
        hsv = np.array(image.convert("HSV"))
        hsv[..., 0] = (hsv[..., 0].astype(np.int32) + round(hue / 360.0 * 256)) % 256
        image = Image.fromarray(hsv, "HSV").convert("RGB")
    if saturation != 1.0:
        image = ImageEnhance.Color(image).enhance(saturation)
    return np.asarray(image, dtype=np.uint8)


def _resize(rgb: np.ndarray, spec: InputSpec) -> np.ndarray:
    """preprocess's zoom and resize."""
    if spec.zoom > 1.0:
        h, w = rgb.shape[:2]
        ch, cw = max(1, round(h / spec.zoom)), max(1, round(w / spec.zoom))
        rgb = rgb[(h - ch) // 2:(h - ch) // 2 + ch, (w - cw) // 2:(w - cw) // 2 + cw]
    elif spec.zoom < 1.0:
        inner = InputSpec(max(1, round(spec.height * spec.zoom)),
                          max(1, round(spec.width * spec.zoom)), spec.resample)
        small = _resize(rgb, inner)
        top, left = (spec.height - inner.height) // 2, (spec.width - inner.width) // 2
        return np.pad(small, ((top, spec.height - inner.height - top),
                              (left, spec.width - inner.width - left), (0, 0)),
                      mode="symmetric")
    if rgb.shape[:2] == (spec.height, spec.width):
        return rgb
    resized = Image.fromarray(np.ascontiguousarray(rgb)).resize(spec.size,
                                                                _RESAMPLE[spec.resample])
    return np.asarray(resized, dtype=np.uint8)
