"""The magnification reading under a brighter or dimmer lamp (issue #29/#30, session 17;
a finding, nothing changed)

    .venv/bin/python scripts/experiments/lamp_scale.py

Each validation image through ImageEnhance.Brightness (shifts.brightness), its two size cues
against the same image as is (median ratio) and the combined scale. Session 17, one run:
lamp x0.85 / x0.9: 1.00; x1.1: red-cell radius 0.896, leukocyte size 0.966, scale 0.910;
x1.2: 0.715, 0.884, 0.775; x1.3: 0.572 (read on 87 %), 0.789, 0.652. A brighter lamp clips
the pale red cells and their central pallor into the background, so they read small: a site
under lamp x1.1 is read as zoom 1.1-1.13 (docs/calibration.md), and the zoom probe would ask
such images at the wrong size. A clipping-proof red-cell reading needs a refit of the
bundled model's check: left for the next session.
"""
import csv, numpy as np
from pathlib import Path
from hemalite import acquisition, shifts
from hemalite.contract import load_image, preprocess
from hemalite.edge.runtime import load_model
model = load_model("hemalite/models/hemalite_int8.tflite")
check = acquisition.from_dict(model.domain.acquisition)
rows = [r["path"] for r in csv.DictReader(open("runs/sweep/size288/splits/val.csv"))]
px = [preprocess(load_image(Path("../shared/data/all4", p)), model.info.spec) for p in rows]
base = [acquisition.measure(x) for x in px]
for f in (0.85, 0.9, 1.1, 1.2, 1.3):
    m = [acquisition.measure(shifts.brightness(x, f)) for x in px]
    out = []
    for cue in ("red_cell_radius", "leukocyte_size"):
        r = np.array([a[cue] / b[cue] for a, b in zip(m, base)])
        out.append(f"{cue} median ratio {np.nanmedian(r):.3f} (read {np.isfinite(r).mean():.2f})")
    s = np.array([check.scale(a) / check.scale(b) for a, b in zip(m, base)])
    print(f"lamp x{f}: " + "; ".join(out) + f"; scale {np.nanmedian(s):.3f}", flush=True)
