"""Test-time augmentation: the mean of the model's probabilities over flips and quarter turns
(issue #29, session 17; not kept)

    .venv/bin/python scripts/experiments/tta.py val

Session 17, validation (one run), best guess with 1 / 2 / 4 / 8 views: as is 98.1 / 98.5 /
98.5 / 98.5 %; lamp x1.2 96.6 / 96.2 / 96.2 / 96.6; blur r1.5 97.3 / 96.2 / 96.6 / 96.2;
objective x0.7 95.0 / 95.8 / 95.0 / 95.0; x1.5 93.5 / 93.9 / 93.1 / 93.5; hue -15 93.9 / 94.3
/ 93.9 / 93.5. The model was trained with flips and turns: averaging over them moves the
best guess by less than a point either way, for up to 8 invokes an image.
"""
import csv, sys, numpy as np
from pathlib import Path
from hemalite import shifts
from hemalite.contract import load_image, preprocess
from hemalite.edge.runtime import load_model
DATA = Path("../shared/data/all4")
split = sys.argv[1] if len(sys.argv) > 1 else "val"
man = "hemalite/models/test_split.csv" if split == "test" else f"runs/sweep/size288/splits/{split}.csv"
rows = [(r["path"], r["label"]) for r in csv.DictReader(open(man))]
model = load_model("hemalite/models/hemalite_int8.tflite")
labels = list(model.info.labels)
truth = np.array([labels.index(l) for _, l in rows])
base = [load_image(DATA / p) for p, _ in rows]
SH = [(None, None), ("brightness", 1.2), ("contrast", 1.2), ("blur", 1.5), ("jpeg", 30), ("magnification", 0.7), ("magnification", 1.5), ("hue", -15), ("rotation", 90)]
def views(x):
    return [x, x[:, ::-1], x[::-1], np.rot90(x), np.rot90(x, 3), np.rot90(x, 2), np.rot90(x[:, ::-1]), np.rot90(x[:, ::-1], 3)]
for name, v in SH:
    x = [preprocess(shifts.apply_shift(a, name, v) if name else a, model.info.spec) for a in base]
    P = np.stack([np.stack([model.predict(np.ascontiguousarray(w)) for w in views(img)]) for img in x])  # N,8,4
    out = []
    for k, sel in (("1", [0]), ("2 flip", [0, 1]), ("4 rot", [0, 3, 5, 4]), ("8", list(range(8)))):
        p = P[:, sel].mean(1)
        acc = (p.argmax(1) == truth).mean()
        conf = p.max(1)
        # selective: accept conf >= 0.6
        a = conf >= 0.6
        out.append(f"{k}: {acc*100:.1f} (floor .6 refers {(~a).mean()*100:.1f}, acc-right {((p.argmax(1)==truth)&a).sum()/max(a.sum(),1)*100:.1f})")
    print(split, name, v, " | ".join(out), flush=True)
