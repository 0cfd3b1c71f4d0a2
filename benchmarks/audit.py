"""The audit: what a model decides from, measured on the benchmark's own images.

For each .tflite, on the same preprocessed images:
  1. accuracy under the acquisition shifts another lab brings (hemalite.shifts.AUDIT_SHIFTS),
     and under stronger faults a technician can fix (FAULT_SHIFTS: which REFER reason each
     gets, and how right the accepted rest is);
  2. accuracy with the leukocytes erased, with only the leukocytes, with the scale-bar
     annotation masked (hemalite.shifts.ABLATIONS);
  3. where the heatmap (the predicted class's activation map, from the model's `cam`
     output) puts its mass: on the leukocytes against their share of the image area, and
     on the annotation corner.
Accuracy counts every image (a referred image is right when its best guess is right);
`referred` says how many the model's own checks would send to a morphologist, by reason.
No TensorFlow: this runs on the device with edge-bench.
"""
from __future__ import annotations

from collections import Counter

import numpy as np

from hemalite import shifts
from hemalite.edge.assess import assess, heatmap_mass, masks
from hemalite.edge.runtime import load_model


def _evaluate(model, images: np.ndarray, y: np.ndarray, heat: bool = False) -> dict:
    """Accuracy, referrals by reason, and (with heat) the heatmap's mass per region."""
    correct, accepted, reasons, on_cells, area, on_corner = [], [], Counter(), [], [], []
    cam_only = []  # the map alone (7 x 7 or 9 x 9), before the visible mask (hemalite.edge.assess)
    corner = np.zeros(images.shape[1:3], bool)
    corner[shifts.annotation_box(*images.shape[1:3])] = True
    for image, truth in zip(images, y):
        a = assess(model, image)
        label = int(np.argmax(a.probabilities))
        correct.append(label == truth)
        reasons[a.reason or "accepted"] += 1
        if a.reason is None:
            accepted.append(label == truth)
        if heat and a.cam is not None:
            region, visible = masks(model, image)
            mass = heatmap_mass(a.cam, label, region, visible)
            if mass is not None:
                on_cells.append(mass)
                cam_only.append(heatmap_mass(a.cam, label, region) or 0.0)
                area.append(float(region.mean()))
                on_corner.append(heatmap_mass(a.cam, label, corner, visible) or 0.0)
    out = {"images": len(y), "accuracy": float(np.mean(correct)) if correct else None,
           "referred": {k: v for k, v in reasons.items() if k != "accepted"},
           "accuracy_accepted": _mean(accepted)}
    if heat:
        out["heatmap"] = {"mass_on_leukocytes": _mean(on_cells), "leukocyte_area": _mean(area),
                          "cam_mass_on_leukocytes": _mean(cam_only),
                          "mass_on_annotation": _mean(on_corner),
                          "annotation_area": float(corner.mean()), "images": len(on_cells)}
    return out


def _mean(values) -> float | None:
    return float(np.mean(values)) if values else None


def shifted_sets(x: np.ndarray) -> dict[str, np.ndarray]:
    """Every audit input set: 'as is', each shift and each ablation (computed once)."""
    sets = {"as is": x}
    for name, value in shifts.AUDIT_SHIFTS:
        sets[shifts.shift_name(name, value)] = np.stack(
            [shifts.apply_shift(img, name, value) for img in x])
    for name, ablate in shifts.ABLATIONS.items():
        sets[name] = np.stack([ablate(img) for img in x])
    for name, value in shifts.FAULT_SHIFTS:
        sets[shifts.FAULT_PREFIX + shifts.shift_name(name, value)] = np.stack(
            [shifts.apply_shift(img, name, value) for img in x])
    return sets


def is_shift(name: str) -> bool:
    """Whether an audit set is one of the audit's shifts (not as is, an ablation or a
    fault): the sets its mean and worst shift are taken over."""
    return (name != "as is" and name not in shifts.ABLATIONS
            and not name.startswith(shifts.FAULT_PREFIX))


def audit_model(path: str, sets: dict[str, np.ndarray], y: np.ndarray,
                threads: int = 2) -> dict:
    """The audit of one .tflite over precomputed input sets: {set name: results}."""
    model = load_model(path, num_threads=threads)
    return {name: _evaluate(model, images, y, heat=name == "as is")
            for name, images in sets.items()}
