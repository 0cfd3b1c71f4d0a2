"""Three ideas measured in session 15 and not adopted, kept rerunnable (validation split,
the bundled int8 model, best guess of edge's own preprocessing unless said):

  gain            a lamp gain before the model (the brightness median brought back to
                  training's, or the exact inverse) under lamp x1.2, x0.85, contrast x1.2;
  tta             the average of 4 rotations, or of the 8 rotations and flips, of each image
                  under six shifts (the objectives at the zoom edge-calibrate reads);
  enlarged-focus  which out-of-focus REFERs a "focus x scale^2 in range" rule would call
                  magnification instead: objective x1.6 (wanted) against blur r1.5 / r3 (not).

    .venv/bin/python scripts/experiments/calibration_ideas.py gain|tta|enlarged-focus
"""
from __future__ import annotations

import collections
import csv
import dataclasses
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

from hemalite import acquisition, shifts
from hemalite.contract import load_image, preprocess
from hemalite.edge.runtime import default_model_path, load_model

MANIFEST = "runs/sweep/size288/splits/val.csv"
DATA = Path("../shared/data/all4")


def split(model):
    with open(MANIFEST, newline="") as fh:
        rows = [(r["path"], r["label"]) for r in csv.DictReader(fh)]
    raw = [load_image(DATA / p) for p, _ in rows]
    return raw, np.array([model.info.labels.index(label) for _, label in rows])


def gain(model, raw, y) -> None:
    med = model.domain.acquisition["medians"]
    rng = np.random.default_rng(0)
    site = np.concatenate([rng.choice(np.flatnonzero(y == c), 10, replace=False)
                           for c in range(len(model.info.labels))])
    rest = np.setdiff1d(np.arange(len(y)), site)
    for name, value in (("brightness", 1.2), ("brightness", 0.85), ("contrast", 1.2)):
        shifted = [preprocess(shifts.apply_shift(x, name, value), model.info.spec) for x in raw]
        read = np.median([acquisition.measure(shifted[j])["brightness"] for j in site])
        out = [f"{shifts.shift_name(name, value)}:"]
        for g in (1.0, med["brightness"] / read, 1 / value if name == "brightness" else 1.0):
            right = np.mean([model.predict(np.asarray(ImageEnhance.Brightness(
                Image.fromarray(shifted[j])).enhance(g))).argmax() == y[j] for j in rest])
            out.append(f"gain {g:.3f} -> {right:.3f}")
        print(*out, flush=True)


def tta(model, raw, y) -> None:
    for shift, zoom in ((None, 1), (("brightness", 1.2), 1), (("blur", 1.5), 1),
                        (("magnification", 1.5), 0.71), (("magnification", 0.7), 1.45),
                        (("jpeg", 30), 1)):
        spec = dataclasses.replace(model.info.spec, zoom=zoom)
        one, four, eight = [], [], []
        for r in raw:
            x = preprocess(shifts.apply_shift(r, *shift) if shift else r, spec)
            p = [model.predict(np.ascontiguousarray(np.rot90(v, k)))
                 for v in (x, x[:, ::-1]) for k in range(4)]
            one.append(p[0])
            four.append(np.mean(p[:4], 0))
            eight.append(np.mean(p, 0))

        def acc(ps):
            return (np.array(ps).argmax(1) == y).mean()
        print(shift or "as is", f"one view {acc(one):.3f}, 4 rotations {acc(four):.3f}, "
              f"8 views {acc(eight):.3f}", flush=True)


def enlarged_focus(model, raw, y) -> None:
    check = acquisition.from_dict(model.domain.acquisition)
    low = check.ranges["focus"][0]
    for shift in (("blur", 1.5), ("blur", 3.0), ("magnification", 1.6)):
        reasons, moved = collections.Counter(), 0
        for r in raw:
            measures = acquisition.measure(preprocess(shifts.apply_shift(r, *shift),
                                                      model.info.spec))
            faults = check.faults(measures)
            reasons[faults[0][1] if faults else None] += 1
            if faults and faults[0][1] == acquisition.OUT_OF_FOCUS:
                scale = check.scale(measures)
                focus = measures["focus"] / check.medians["focus"]
                moved += bool(np.isfinite(scale) and scale > 1
                              and np.log(focus * scale ** 2) >= low)
        print(shifts.shift_name(*shift), dict(reasons),
              f"out-of-focus the rule would call magnification: {moved}", flush=True)


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else ""
    runs = {"gain": gain, "tta": tta, "enlarged-focus": enlarged_focus}
    if what not in runs:
        sys.exit(__doc__)
    model = load_model(default_model_path())
    runs[what](model, *split(model))
