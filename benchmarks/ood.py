"""The domain check, measured: in-domain coverage and accuracy, and out-of-domain referrals.

In-domain: the benchmark's images (a test split). Out-of-domain, made here without new data:
other stains and tissues and other microscopy (scikit-image's immunohistochemistry, cell
and retina images, in crops), everyday photographs (scikit-image's), strong versions of the
audit's shifts applied to the in-domain images, blank and noise frames, and the healthy
class's cells seen closer up (each benign image cropped to 2.5 x the longer side of its
largest stained blob: a single cell then fills about 40 % of the width, a cluster of touching
cells less, so some of these lie within training's magnification range; measured in
scripts/experiments/closeup_zoom.py: the stand-in here for single-cell images of healthy
white cells from another lab's camera, which these images are not). scikit-image is
optional (bench extra): without it those two kinds are left out and the report says so.
"""
from __future__ import annotations

import os

import numpy as np

from hemalite import shifts
from hemalite.contract import InputSpec, preprocess
from hemalite.edge.assess import assess
from hemalite.edge.runtime import load_model

MICROSCOPY = ("ihc.png", "cell.png", "retina.jpg", "microaneurysms.png")
PHOTOGRAPHS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg",
               "motorcycle_left.png", "hubble_deep_field.jpg", "horse.png", "coins.png")


def _skimage_images(names) -> list[np.ndarray]:
    try:
        import skimage
    except ImportError:
        return []
    from PIL import Image

    from hemalite.contract import to_rgb

    folder = os.path.join(os.path.dirname(skimage.__file__), "data")
    return [np.asarray(to_rgb(Image.open(os.path.join(folder, n)))) for n in names
            if os.path.isfile(os.path.join(folder, n))]


def _crops(rgb: np.ndarray, side: int) -> list[np.ndarray]:
    """The whole image and its four quadrants, so one picture gives five fields of view."""
    h, w = rgb.shape[:2]
    views = [rgb] + [rgb[i:i + h // 2, j:j + w // 2] for i in (0, h // 2) for j in (0, w // 2)]
    return [v for v in views if min(v.shape[:2]) >= side // 2]


def closeups(images: np.ndarray, zoom: float = 2.5) -> list[np.ndarray]:
    """hemalite.shifts.closeup of each image (images without a leukocyte are left out)."""
    return [c for c in (shifts.closeup(rgb, zoom) for rgb in images) if c is not None]


def other_lab_images(folder: str) -> list[np.ndarray]:
    """Every readable image under a folder of another lab's photographs (a bad file is
    skipped with a warning line)."""
    import logging
    from pathlib import Path

    from hemalite.contract import ImageError, is_image_name, load_image

    images = []
    for path in sorted(p for p in Path(folder).rglob("*") if is_image_name(p.name)):
        try:
            images.append(load_image(path))
        except ImageError as err:
            logging.getLogger(__name__).warning("%s: %s (skipped)", path, err)
    return images


def ood_sets(x: np.ndarray, spec: InputSpec, per_shift: int = 20, seed: int = 0,
             healthy: np.ndarray | None = None, other_labs=()) -> dict:
    """{kind: (N, H, W, 3) uint8}, every image through the one preprocess(). `healthy`: the
    in-domain images of the healthy class, for the close-ups; `other_labs`: folders of
    another lab's photographs (e.g. ../shared/data/other_labs/bccd/images), each a kind."""
    rng = np.random.default_rng(seed)
    sets = {}
    for folder in other_labs:
        images = other_lab_images(folder)
        if images:
            name = os.path.basename(os.path.normpath(folder))
            if name == "images":  # bccd/images: the lab's name is the folder above
                name = os.path.basename(os.path.dirname(os.path.normpath(folder)))
            sets[f"other lab: {name}"] = images
    if healthy is not None and len(healthy):
        sets["healthy cells, closer up"] = closeups(healthy)
    micro = [c for img in _skimage_images(MICROSCOPY) for c in _crops(img, spec.height)]
    photos = [c for img in _skimage_images(PHOTOGRAPHS) for c in _crops(img, spec.height)]
    if micro:
        sets["other stains and microscopy"] = micro
    if photos:
        sets["photographs"] = photos
    pick = x[rng.permutation(len(x))[:per_shift]]
    sets["strong shifts"] = [shifts.apply_shift(img, n, v) for n, v in shifts.STRONG_SHIFTS
                             for img in pick]
    h, w = spec.height, spec.width
    blank = [np.full((h, w, 3), v, np.uint8) for v in (0, 128, 245, 255)]
    noise = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(4)]
    noise += [np.clip(rng.normal(200, 40, (h, w, 3)), 0, 255).astype(np.uint8)
              for _ in range(4)]
    sets["blank and noise"] = blank + noise
    return {k: np.stack([preprocess(np.ascontiguousarray(v), spec) for v in imgs])
            for k, imgs in sets.items()}


def curve(values: np.ndarray, correct: np.ndarray, accept_high: bool) -> list[dict]:
    """Coverage and accuracy on the accepted images as a threshold sweeps `values`."""
    order = np.sort(np.unique(values))
    points = []
    for t in order[:: max(1, len(order) // 50)].tolist() + [order[-1]]:
        kept = values >= t if accept_high else values <= t
        points.append({"threshold": float(t), "coverage": float(kept.mean()),
                       "accuracy": float(correct[kept].mean()) if kept.any() else None})
    return points


def evaluate_domain(path: str, x: np.ndarray, y: np.ndarray, sets: dict,
                    malignant: tuple[int, ...], threads: int = 2) -> dict | None:
    """For a model with a domain check: test-split curves and referral rates per OOD kind.

    `malignant` are the label indices a confident wrong call on healthy cells would be.
    """
    model = load_model(path, num_threads=threads)
    check = model.domain
    if check is None:
        return None
    floor = check.min_confidence
    test = [assess(model, img, floor) for img in x]
    conf = np.array([a.probabilities.max() for a in test])
    score = np.array([a.domain_score if a.domain_score is not None else np.inf for a in test])
    correct = np.array([a.probabilities.argmax() == t for a, t in zip(test, y)])
    accepted = np.array([a.reason is None for a in test])
    out = {"threshold": check.threshold, "acceptance": check.acceptance,
           "min_confidence": floor, "acquisition": check.acquisition,
           "test": {"images": len(y), "referred": float(1 - accepted.mean()),
                    "accuracy_accepted": float(correct[accepted].mean()) if accepted.any() else None,
                    "reasons": _count([a.reason for a in test]),
                    "scores": np.round(score[np.isfinite(score)], 3).tolist()},
           "curves": {"confidence": curve(conf, correct, True),
                      "domain_score": curve(score, correct, False)},
           "ood": {}}
    for kind, images in sets.items():
        res = [assess(model, img, floor) for img in images]
        confident_malignant = sum(a.reason is None and int(a.probabilities.argmax()) in malignant
                                  for a in res)
        out["ood"][kind] = {
            "images": len(res), "referred": float(np.mean([a.reason is not None for a in res])),
            "reasons": _count([a.reason for a in res]),
            "accepted_as_malignant": confident_malignant / len(res),
            "scores": [round(a.domain_score, 3) for a in res if a.domain_score is not None]}
    return out


def _count(reasons) -> dict:
    out: dict = {}
    for r in reasons:
        key = r or "accepted"
        out[key] = out.get(key, 0) + 1
    return out
