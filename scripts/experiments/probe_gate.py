"""Which calls need the probes? Gate them on the call's top probability (issue #30/#33,
session 17; adopted as hemalite.edge.assess.PROBE_BELOW)

    .venv/bin/python scripts/experiments/probe_gate.py val

The probes (hemalite.edge.assess.zoom_probe, stain_turn) cost an invoke each time they ask.
Each image of the split through stain and objective shifts, assessed with every other check
(the bundled int8 model); each accepted image is then put to both probes themselves (the
model's invokes counted): whether either would refer it, its top probability, how many
invokes they took. Per gate g (ask only calls whose top probability is under g; the int8
model's highest is 255/256 = 0.996, so 1.01 and 0.999 mean no gate): how many more
referred (how many of those right), how right the rest are, and the probes' invokes per
accepted image.

Session 17, validation (one run): g 0.995: as is 0.58 -> 0.09 probe invokes per image, the
same one wrong call referred; hue -30 42 of the 43 wrong calls (rest 94.7 -> 90.0 % right); hue -20
18 (1 right, against 2), -15 14 (none right), +15 and +30 unchanged; objective x0.7 4 (none
right), x1.5 10 (7 right, against 9), x0.6 and x1.6 unchanged. g 0.99: hue -30 41 of 43.
Test split (read once, to report; images asked, not invokes, counted then), g 0.995: as is
0.45 -> 0.09 of the images asked, the same two referred;
hue -30 30 of the 31 (the rest 82.4 -> 77.8 % right); x1.5 3 (2 right, against 4 of 5);
x1.6 7 (4 right, against 5 of 8); the other shifts unchanged.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from common import arguments, split_rows  # this script's folder is on sys.path

from hemalite import shifts
from hemalite.contract import load_image, preprocess
from hemalite.edge import assess as assessing
from hemalite.edge.runtime import load_model

SHIFTS = (None, ("hue", -30), ("hue", -20), ("hue", -15), ("hue", 15), ("hue", 30),
          ("magnification", 0.7), ("magnification", 1.5), ("magnification", 0.6),
          ("magnification", 1.6))
GATES = (1.01, 0.999, 0.995, 0.99, 0.98, 0.95)


def main() -> None:
    args = arguments(__doc__).parse_args()
    assessing.PROBE_BELOW = 0.0  # every other check: the probes are scored here
    rows = split_rows(args.split, args.run)
    model = load_model(args.model)
    labels = model.info.labels
    images = [preprocess(load_image(Path(args.data, p)), model.info.spec) for p, _ in rows]
    predict, asked = model.predict, []

    def counted(x):  # the real model; each call a probe makes is one more invoke
        asked.append(1)
        return predict(x)

    for shift in SHIFTS:
        rec = []  # right, top probability, a probe refers it, the probes' invokes
        for px, (_, truth) in zip(images, rows):
            x = px if shift is None else shifts.apply_shift(px, *shift)
            a = assessing.assess(model, x)
            if a.reason is not None:
                continue
            asked.clear()
            model.predict = counted
            refers = [probe(model, x, a.probabilities, a.measures) is not None
                      for probe in (assessing.zoom_probe, assessing.stain_turn)]
            model.predict = predict
            rec.append((labels[int(np.argmax(a.probabilities))] == truth,
                        float(a.probabilities.max()), any(refers), len(asked)))
        r = np.array(rec, float)
        line = f"{str(shift):24s} accepted {len(r):3d}, right {r[:, 0].mean():.3f} |"
        for g in GATES:
            flag = (r[:, 2] == 1) & (r[:, 1] < g)
            asks = (r[:, 3] * (r[:, 1] < g)).sum() / len(r)
            line += (f" g{g:g}: +{int(flag.sum())} ({int((flag & (r[:, 0] == 1)).sum())} "
                     f"right), rest {r[~flag, 0].mean():.3f}, asks {asks:.2f} |")
        print(line, flush=True)


if __name__ == "__main__":
    main()
