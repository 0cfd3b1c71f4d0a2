"""Can the stain measures together catch what hue -30 lets through? (issue #30; not kept)

    .venv/bin/python scripts/experiments/stain_joint.py runs/sweep/size288 --split val

The bundled int8 model and its stored acquisition check; each image of the split through
the audit's stain and other shifts, assessed as edge-classify does. For the images it
accepts: their accuracy, and how many a joint stain distance J would also refer (the norm of
hue, strength and saturation, each as its position in its stored range: 1 = the range's
edge) and the accuracy of the rest. Session 14, validation: J 1.0 refers 40 of the 62
accepted under hue -30 and 4 of 254 as is, but the rest stay 36 % right (29 % before): the
measures cannot tell which of them are wrong (benchmarks/reports/acquisition/curves.md).
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from hemalite import acquisition, shifts
from hemalite.contract import load_image, preprocess
from hemalite.edge.assess import assess
from hemalite.edge.runtime import load_model

SHIFTS = (None, ("hue", -30), ("hue", -20), ("hue", -15), ("hue", 15), ("hue", 30),
          ("saturation", 0.6), ("brightness", 0.85), ("contrast", 0.8), ("contrast", 1.2),
          ("blur", 1.5), ("jpeg", 30), ("magnification", 0.7), ("magnification", 1.5))
JOINT = (0.8, 0.9, 1.0, 1.1, 1.2)
STAIN = ("hue", "strength", "saturation")


def positions(check: acquisition.AcquisitionCheck, measures: dict) -> np.ndarray:
    """Each stain measure's place in its range: 0 its centre, +-1 its edges."""
    values, out = check.values(measures), []
    for name in STAIN:
        low, high = check.ranges[name]
        d = acquisition._deviation(name, values[name], check.medians.get(name, 1.0))
        out.append((d - (low + high) / 2) / ((high - low) / 2) if np.isfinite(d) else 0.0)
    return np.array(out)


def also_referred(right: np.ndarray, score: np.ndarray, thresholds, tag: str) -> str:
    """Of the accepted images (`right`: each one's call right or not), for each threshold:
    how many a rule `score > threshold` would also refer, and how right the rest are."""
    parts = []
    for t in thresholds:
        keep = score <= t
        rest = f"{right[keep].mean():.3f}" if keep.any() else "-"
        parts.append(f" {tag} {t}: +{(~keep).sum()} referred, rest right {rest} |")
    return "".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a run directory (its splits/ are read)")
    parser.add_argument("--split", default="val")
    parser.add_argument("--model", default="hemalite/models/hemalite_int8.tflite")
    parser.add_argument("--data", default="../shared/data/all4")
    args = parser.parse_args()
    model = load_model(args.model)
    check = acquisition.from_dict(model.domain.acquisition)
    with open(args.run / "splits" / f"{args.split}.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    images = [preprocess(load_image(Path(args.data, r["path"])), model.info.spec) for r in rows]
    for shift in SHIFTS:
        right, joint = [], []
        for rgb, row in zip(images, rows):
            a = assess(model, rgb if shift is None else shifts.apply_shift(rgb, *shift))
            if a.reason is None:
                right.append(row["label"] == model.info.labels[int(np.argmax(a.probabilities))])
                joint.append(float(np.linalg.norm(positions(check, a.measures))))
        right, joint = np.array(right, bool), np.array(joint)
        print(f"{str(shift):22s} accepted {len(right):3d}, right {right.mean():.3f} |"
              + also_referred(right, joint, JOINT, "J"), flush=True)


if __name__ == "__main__":
    main()
