"""Does the call follow the cells' size? Ask again at training's size (issue #30, session 17;
adopted as hemalite.edge.assess.zoom_probe)

    .venv/bin/python scripts/experiments/zoom_probe.py val

Each image of the split through objective and other shifts, assessed as edge-classify does
with every other check (the bundled int8 model, its stored ranges, the stain probe); each
accepted image whose magnification reading (hemalite.acquisition's scale) is more than T
(in log) from 1 is classified again at the zoom 1 / scale (the contract's zoom, as a site
calibration applies it), and would be referred when the call changes. Printed per shift:
accepted, right among them; per T: how many more referred (how many of those right), how
right the rest are, and the share of the accepted asked twice.

Session 17, validation (one run; shifts.magnification's zoom as the probe gave the same
counts): T 0.15: as is +0 (16 % asked); x0.6 +1 (a wrong call; 94.4 -> 100 %); x0.7 +4
(none right; 94.2 -> 97.0); x1.5 +5 (2 right; 94.3 -> 97.6); x1.6 +1 (wrong; 95.2 -> 96.7);
lamp x1.1 +3 (2 right); hue -15, contrast x1.2 +1 wrong call each. T 0.2: 4 % asked as
is, x0.7 +4, x1.5 +3 (2 right), x0.6 +1. T 0.1: 36 % asked, nothing more caught.
Test split, T 0.15 (read once, to report): as is +0 (14 % asked); x0.6 +2 (1 right; 88.2 ->
93.3 %); x0.7 +5 (2 right; 96.1 -> 98.4); x1.5 +1 (wrong; 94.6 -> 95.7); x1.6 +1 (wrong;
97.9 -> 100); lamp x1.1 +2 (1 right). At a calibrated site (the site's zoom applied) it
cost right calls (calibration_protocol.py: test mean 95.4 -> 95.05 %, validation 96.8 ->
96.2; a brighter lamp's red cells read small and were asked at the wrong size): it runs
only on a model no site calibrated.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from common import arguments, split_rows  # this script's folder is on sys.path

from hemalite import acquisition, shifts
from hemalite.contract import load_image, preprocess
from hemalite.edge import assess as assessing
from hemalite.edge.runtime import load_model

SHIFTS = (None, ("magnification", 0.6), ("magnification", 0.7), ("magnification", 1.5),
          ("magnification", 1.6), ("brightness", 1.1), ("brightness", 0.85), ("blur", 1.5),
          ("hue", -15), ("contrast", 1.2))
LOGS = (0.0, 0.1, 0.15, 0.2, 0.3)


def main() -> None:
    parser = arguments(__doc__)
    args = parser.parse_args()
    assessing.ZOOM_PROBE_LOG = float("inf")  # every other check: this rule is scored here
    rows = split_rows(args.split, args.run)
    model = load_model(args.model)
    labels, check = model.info.labels, acquisition.from_dict(model.domain.acquisition)
    images = [preprocess(load_image(Path(args.data, p)), model.info.spec) for p, _ in rows]
    for shift in SHIFTS:
        rec = []  # right, |log scale|, call kept at training's size
        for px, (_, truth) in zip(images, rows):
            x = px if shift is None else shifts.apply_shift(px, *shift)
            a = assessing.assess(model, x)
            if a.reason is not None:
                continue
            call = int(np.argmax(a.probabilities))
            scale = check.values(a.measures)["scale"]
            if not np.isfinite(scale) or scale <= 0:
                rec.append((labels[call] == truth, 0.0, True))
                continue
            spec = dataclasses.replace(model.info.spec, zoom=1.0 / scale)
            kept = int(np.argmax(model.predict(preprocess(x, spec)))) == call
            rec.append((labels[call] == truth, abs(np.log(scale)), kept))
        r = np.array(rec, float)
        line = f"{str(shift):24s} accepted {len(r):3d}, right {r[:, 0].mean():.3f} |"
        for t in LOGS:
            flag = (r[:, 1] > t) & (r[:, 2] == 0)
            line += (f" T{t:g}: +{int(flag.sum())} ({int((flag & (r[:, 0] == 1)).sum())} "
                     f"right), rest {r[~flag, 0].mean():.3f}, asked {(r[:, 1] > t).mean():.2f} |")
        print(line, flush=True)


if __name__ == "__main__":
    main()
