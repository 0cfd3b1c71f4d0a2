"""One image through the model and the checks around it: probabilities, heatmap, and why to
refer it to a morphologist instead of trusting the label.

Reasons, in the order they are checked (all but low-confidence only for models that carry a
domain check, i.e. made by `hemalite convert` from a MobileNetV2 run):
  no-leukocyte   the stain mask finds no leukocyte: there is nothing to classify (also
                 with --no-domain-check: it is a result, not a guess), unless a fault at
                 the microscope explains it (the darkest objects, the nuclei, in another
                 stain's colour; a lamp or an objective far off): then that fault's reason;
  exposure, magnification, out-of-focus, stain
                 something to fix at the microscope (hemalite.acquisition: the lamp, the
                 objective, the focus, the stain or white balance); the detail gives the
                 number, the range and the fix, the worst fault first; also `magnification`
                 or `stain` when the call follows the cells' size or the stain's colour
                 within the ranges: it changes once the image is brought to training's size
                 (zoom_probe) or its hue turned back to training's (stain_turn);
  out-of-domain  the model's features are unlike the training images' (hemalite.domain),
                 and no reading is near its limit (else that reading's reason: the fix);
  exposure, magnification, out-of-focus, stain (again)
                 an unsure call (under UNSURE_BELOW) on an image whose reading is near
                 its limit, past half-way (near_limit): the fault it is drifting toward
                 (neither near-limit rule on a calibrated site's model);
  low-confidence the top probability is below the floor (--min-confidence).
The label is still computed for every image: a REFER keeps the model's best guess.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from hemalite import acquisition, cells
from hemalite import domain as dom
from hemalite.contract import preprocess
from hemalite.edge.runtime import Model


# An image whose leukocyte hue is more than this many degrees from training's median (about
# one training sd; Pro-B's magenta slides sit +9 degrees off, Benign's spread 12) is classified
# a second time with its hue turned back; a call that changes is the stain's, not the cells'.
# Chosen on the validation split (scripts/experiments/stain_turn.py): under hue -30 it
# refers 43 of the 44 wrong calls the other checks accepted and none of the right ones
# (accepted 29 -> 95 % right), under hue -15 13 (none right: 92.8 -> 98.2 %), as is one wrong
# call; 5 degrees asks 44 % of unshifted images twice, 10 degrees 16 % (hue -30: 86 % right).
STAIN_TURN_DEGREES = 5.0
# Likewise for the cells' size: an image whose magnification reading (hemalite.acquisition's
# scale, about 12 % from image to image on one microscope) is more than 16 % larger or 14 %
# smaller than training's (|log| > 0.15) is classified again at the zoom that brings its
# cells to training's size, and a call that changes is the objective's. Validation
# (scripts/experiments/zoom_probe.py): objective x0.7 4 more referred, all wrong calls
# (accepted 94.2 -> 97.0 % right), x1.5 5 (2 right; 94.3 -> 97.6), x0.6 and x1.6 one wrong
# call each, as is none; 16 % of unshifted images asked twice (0.2: 4 %, and two fewer
# wrong calls caught).
ZOOM_PROBE_LOG = 0.15
# Both probes ask only calls under this top probability (the int8 model's highest is 255/256
# = 0.996): on validation its surest calls held under every turn and zoom but one of the 43
# wrong calls under hue -30, and unshifted images asked twice fall from 48 to 8 %
# (scripts/experiments/probe_gate.py).
PROBE_BELOW = 0.995
# An unsure call on an image whose acquisition is drifting toward a fault is referred for
# that fault: top probability under UNSURE_BELOW and a reading near its limit (more than
# acquisition.NEAR_LIMIT, half-way, from training's median to the limit). An
# unsure call is where a shift tips the model; an unsure call on a well-taken image is left
# to the floor (--min-confidence). Chosen on the validation split
# (scripts/experiments/floor.py, near_limit.py): as is 1 more image referred (a wrong call;
# 3.1 -> 3.4 %), objective x1.6 accepted 96.7 -> 100 % right, x1.5 97.6 -> 100, x0.7
# 97.0 -> 97.7, contrast x0.8 98.4 -> 99.2, each for 0.4-2.7 % more referred; a floor of 0.8
# on every image instead refers 3.8 % as is.
UNSURE_BELOW = 0.8
# The near-limit rules (near_limit, and naming an out-of-domain image after a reading near
# its limit) do not run on a calibrated site's model: its readings are centred on the site's
# own images and its floor (edge.calibrate.SITE_FLOOR) was chosen with them. True only in
# experiments (scripts/experiments/calibration_protocol.py --near-limit-at-sites).
NEAR_LIMIT_AT_SITES = False


@dataclass
class Assessment:
    probabilities: np.ndarray  # one per label
    reason: str | None = None  # why to refer (None: accept the label)
    detail: str = ""  # the numbers behind the reason, for logs and CSV
    cam: np.ndarray | None = None  # (rows, columns, classes) class-activation maps
    domain_score: float | None = None
    cells: int | None = None
    measures: dict | None = None  # hemalite.acquisition.measure of the model's input


def read_cam(model: Model, classes: int) -> np.ndarray | None:
    """The model's class-activation maps as (rows, columns, classes), when it has them."""
    if not model.has_output("cam"):
        return None
    flat = model.get_output("cam")
    side = int(round((flat.size / classes) ** 0.5))
    return flat.reshape(side, flat.size // (side * classes), classes)


def image_cam(model: Model, pixels: np.ndarray) -> np.ndarray | None:
    """The image's own class-activation maps, invoked again: after assess, the model's
    last invoke may be a probe's (a zoomed or recoloured copy), not this image's."""
    if not model.has_output("cam"):
        return None
    model.predict(pixels)
    return read_cam(model, len(model.info.labels))


def assess(model: Model, pixels: np.ndarray, min_confidence: float = 0.0,
           domain_check: bool = True, measures: dict | None = None) -> Assessment:
    """Invoke and decide whether the label can stand (see the module docstring); the probes
    may invoke once or twice more, on copies, overwriting the model's outputs.
    `measures`: hemalite.acquisition.measure(pixels) when the caller has already made it."""
    probs = model.predict(pixels)
    result = Assessment(probs, cam=read_cam(model, len(probs)))
    check = model.domain
    if check is None:
        return _floor(result, min_confidence)
    result.measures = acquisition.measure(pixels) if measures is None else measures
    result.cells = result.measures["cells"]
    faults = check.acquisition_faults(result.measures) if domain_check else []
    if check.leukocytes and not result.cells:  # a result, not a guess ...
        result.reason, result.detail = dom.NO_LEUKOCYTE, ("no stained leukocyte found: move "
                                                          "to a field with white cells")
        if faults:  # ... unless the lamp, objective or stain explains why none was found
            result.reason = faults[0][1]
            result.detail = "; ".join(["no leukocyte found"] + [d for _, _, d in faults])
        return result
    if domain_check:
        if faults:
            result.reason = faults[0][1]
            result.detail = "; ".join(detail for _, _, detail in faults)
            return result
        z = model.get_output("domain")  # before the probes' invokes overwrite it
        result.domain_score = check.feature_score(z)
        outlier = check.outlier_score(z)
        probes = (((acquisition.MAGNIFICATION, zoom_probe), (acquisition.STAIN, stain_turn))
                  if result.probabilities.max() < PROBE_BELOW else ())
        for reason, probe in probes:
            changed = probe(model, pixels, result.probabilities, result.measures)
            if changed:
                result.reason, result.detail = reason, changed
                return result
        out = []
        if outlier is not None and outlier > check.outlier["threshold"]:
            out.append(f"outlier score {outlier:.2f} > {check.outlier['threshold']:.2f}")
        if result.domain_score > check.threshold:
            out.insert(0, f"feature score {result.domain_score:.2f} > {check.threshold:.2f}")
        if out:
            drifting = fault_near_limit(model, result.measures)
            if drifting:  # the reading drifting toward its limit says what to fix first
                reason, detail = drifting
                result.reason = reason
                result.detail = "; ".join(out + [
                    f"unlike the training images, and {detail}; if it is still referred once "
                    "fixed, send to a morphologist"])
                return result
            # nothing at the microscope explains it: a person judges the image
            out.append("unlike the training images: send to a morphologist (another "
                       "microscope: edge-calibrate)")
            result.reason, result.detail = dom.OUT_OF_DOMAIN, "; ".join(out)
            return result
        near = near_limit(model, result.probabilities, result.measures)
        if near:
            result.reason, result.detail = near
            return result
    return _floor(result, min_confidence)


def fault_near_limit(model: Model, measures: dict) -> tuple[str, str] | None:
    """(reason, detail) of a reading near its limit (more than acquisition.NEAR_LIMIT of the
    way there), the first in the order a technician fixes them (the lamp first, not the
    nearest); None when every reading is closer to its median, or at a calibrated site."""
    check = model.domain.acquisition_check
    if check is None or (model.info.extra.get("site_calibration") and not NEAR_LIMIT_AT_SITES):
        return None
    near = [(acquisition.REASONS.index(acquisition.MEASURES[name][0]), -position, name, side)
            for position, name, side in check.nearest_limits(measures)
            if position > acquisition.NEAR_LIMIT]
    if not near:
        return None
    _, _, name, side = min(near)
    return acquisition.MEASURES[name][0], (
        f"{acquisition.PLAIN.get(name, name)} close to its limit: "
        f"{check.describe(name, side, measures)}")


def near_limit(model: Model, probabilities: np.ndarray,
               measures: dict) -> tuple[str, str] | None:
    """(reason, detail) when the call is unsure (top under UNSURE_BELOW) and a reading is
    near its limit (fault_near_limit), else None."""
    top = float(probabilities.max())
    drifting = fault_near_limit(model, measures) if top < UNSURE_BELOW else None
    if not drifting:
        return None
    reason, detail = drifting
    return reason, f"unsure call (top {top:.3f}) and {detail}"


def stain_turn(model: Model, pixels: np.ndarray, probabilities: np.ndarray,
               measures: dict) -> str | None:
    """The REFER detail when the call follows the stain's colour, else None: with the
    image's hue more than STAIN_TURN_DEGREES from training's median, the model is asked
    again with the hue turned back (turn_hue), and a different call means the colour, not
    the cells, decided it (under a stain batch or white balance 30 degrees off, most of what
    the range checks let through). A second invoke: it overwrites the model's other outputs.
    Not at a calibrated site: its colour step has turned the site's stain back, the labels
    validated it, and there the probe referred right calls (test split, 12 sites: about 20
    right and 3 wrong; the mean right 94.9 against 95.4 % without it)."""
    check = model.domain.acquisition_check
    if check is None or model.info.extra.get("site_calibration"):
        return None  # a calibrated site's colour step has turned its stain back already
    off = check.hue_deviation(measures)
    if not np.isfinite(off) or abs(off) <= STAIN_TURN_DEGREES:
        return None
    labels = model.info.labels
    call = int(np.argmax(probabilities))
    other = int(np.argmax(model.predict(turn_hue(pixels, -off))))
    if other == call:
        return None
    return (f"hue {off:+.0f} degrees from training's: the call changes from "
            f"{labels[call]} to {labels[other]} when it is turned back, so the stain's colour "
            f"decided it: check the stain batch and the camera's white balance (another lab's "
            f"stain: edge-calibrate)")


def zoom_probe(model: Model, pixels: np.ndarray, probabilities: np.ndarray,
               measures: dict) -> str | None:
    """The REFER detail when the call follows the cells' size, else None: with the image's
    magnification reading more than ZOOM_PROBE_LOG from training's in log (cells 16 %
    larger or 14 % smaller), the model is asked again with its input zoomed by the inverse
    (the contract's zoom, applied to the model-size pixels: a calibrated site's zoom works
    on the whole decoded image, at a higher resolution where the camera gives one), and a
    different call means the size of the cells, not their look, decided it. A second
    invoke. Not at a calibrated site (its zoom has undone its objective; there the probe
    cost 0.4 points of right on the test split's 12 sites, 0.6 on validation's: a brighter
    lamp's red cells read small, and the probe asked those images at the wrong size)."""
    check = model.domain.acquisition_check
    if check is None or model.info.extra.get("site_calibration"):
        return None  # a calibrated site's zoom has brought its cells to training's size
    scale = check.values(measures)["scale"]
    if not np.isfinite(scale) or scale <= 0 or abs(np.log(scale)) <= ZOOM_PROBE_LOG:
        return None
    labels = model.info.labels
    spec = dataclasses.replace(model.info.spec, zoom=1.0 / scale)
    call = int(np.argmax(probabilities))
    other = int(np.argmax(model.predict(preprocess(pixels, spec))))
    if other == call:
        return None
    fix = acquisition.FIXES[("scale", "low" if scale < 1 else "high")]
    return (f"scale {scale:.2f} x training's: the call changes from {labels[call]} to "
            f"{labels[other]} when the image is zoomed to training's cell size, so the cells' "
            f"size decided it: {fix} (another objective: edge-calibrate)")


def turn_hue(pixels: np.ndarray, degrees: float) -> np.ndarray:
    """stain_turn's probe: the hue turned by `degrees` with OpenCV (0.7 ms at 288 px; the
    contract's Pillow `recolour`, which a calibrated site's colour step uses, takes 4 ms and
    agrees within 3 grey levels on 99 % of the pixels). Not a model input for the label."""
    import cv2

    hsv = cv2.cvtColor(np.ascontiguousarray(pixels), cv2.COLOR_RGB2HSV_FULL)
    hsv[..., 0] = (hsv[..., 0].astype(np.int16) + round(degrees / 360.0 * 256)) % 256
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB_FULL)


def _floor(result: Assessment, min_confidence: float) -> Assessment:
    top = float(result.probabilities.max())
    if top < min_confidence:
        result.reason = dom.LOW_CONFIDENCE
        result.detail = (f"top probability {top:.3f} < {min_confidence:.3f}: the model is unsure, "
                         "send to a morphologist")
    return result


def heatmap(cam: np.ndarray, label: int, size: tuple[int, int],
            visible: np.ndarray | None = None) -> np.ndarray:
    """The predicted class's activation map, positive part, resized to (height, width),
    scaled to [0, 1] (all zeros when the class has no positive evidence anywhere).

    `visible` (visible_mask: what a cell-grounded model sees, in [0, 1] at any size) keeps
    the map on the pixels the model can use: the 7 x 7 map, upsampled, also spreads over
    the grey its Ground layer put around each cell, where the model sees nothing.
    """
    positive = np.maximum(cam[..., label], 0.0).astype(np.float32)
    resized = _resize(positive, size)
    if visible is not None:
        resized = resized * np.clip(_resize(visible.astype(np.float32), size), 0.0, 1.0)
    top = resized.max()
    return resized / top if top > 0 else np.zeros_like(resized)


def _resize(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    if a.shape[:2] == tuple(size):
        return a
    return np.asarray(Image.fromarray(a).resize((size[1], size[0]), Image.BILINEAR))


def visible_mask(model: Model, pixels: np.ndarray) -> np.ndarray | None:
    """The pixels a cell-grounded model sees (its Ground layer's mask, hemalite.cells), in
    [0, 1]; None for a model that sees the whole image. Everything outside this mask reaches
    the model as one grey, so no evidence can come from there (tests/test_grounding.py)."""
    return masks(model, pixels)[1]


def masks(model: Model, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(leukocyte_region, visible_mask) of the model's input from one stain mask."""
    soft = cells.soft_mask(pixels)
    return soft >= 0.5, (soft if model.info.extra.get("ground") else None)


def heatmap_mass(cam: np.ndarray, label: int, region: np.ndarray,
                 visible: np.ndarray | None = None) -> float | None:
    """Share of the positive heatmap that falls inside a boolean region of the image."""
    heat = heatmap(cam, label, region.shape, visible)
    total = heat.sum()
    return float(heat[region].sum() / total) if total > 0 else None


def leukocyte_region(pixels: np.ndarray) -> np.ndarray:
    """Where the leukocytes are, as the heatmap measures it: the model's own stain mask."""
    return cells.leukocyte_mask(pixels)


def colourise(heat: np.ndarray) -> np.ndarray:
    """[0, 1] heat -> RGB uint8 with a blue-to-red ramp (no matplotlib on the device)."""
    stops = np.array([[0, 0, 128], [0, 128, 255], [0, 255, 128], [255, 255, 0], [255, 0, 0]],
                     np.float32)
    pos = np.clip(heat, 0, 1) * (len(stops) - 1)
    low = np.floor(pos).astype(int).clip(0, len(stops) - 2)
    frac = (pos - low)[..., None]
    return (stops[low] * (1 - frac) + stops[low + 1] * frac).astype(np.uint8)


def outline(mask: np.ndarray) -> np.ndarray:
    """The boundary pixels of a boolean mask (inside pixels with an outside neighbour)."""
    padded = np.pad(mask, 1, mode="edge")
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~inner


def heatmap_panel(rgb: np.ndarray, pixels: np.ndarray, cam: np.ndarray, label: int,
                  alpha: float = 0.45, visible: np.ndarray | None = None) -> np.ndarray:
    """Side by side, each at the image's own size: the image, the heatmap over it (on the
    `visible` pixels only, when given), and the outline of the leukocyte mask the model used
    (found on `pixels`, the model's input)."""
    from PIL import Image

    heat = heatmap(cam, label, rgb.shape[:2], visible)
    overlay = (rgb * (1 - alpha) + colourise(heat) * alpha).astype(np.uint8)
    region = leukocyte_region(pixels) if visible is None else visible >= 0.5  # same mask
    mask = Image.fromarray(region).resize(rgb.shape[1::-1], Image.NEAREST)
    outlined = rgb.copy()
    outlined[outline(np.asarray(mask))] = (0, 255, 0)
    return np.concatenate([rgb, overlay, outlined], axis=1)
