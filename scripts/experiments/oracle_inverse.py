"""Would undoing a lamp, a defocus or a contrast change before the model help a site? The
known inverse of each audit shift, applied to the shifted images, and the bundled model's
best guess (issue #29, session 17; not kept)

    .venv/bin/python scripts/experiments/oracle_inverse.py val

Session 17, validation (261 images, one run), best guess and mean negative log-likelihood:
lamp x1.2 96.6 %, with the exact gain 1/1.2 94.3 % (x1/1.1: 95.4); blur r1.5 97.3 %, with an
unsharp mask 87.4-94.6 % (every strength worse); contrast x1.2 98.1 -> 98.9 % with contrast
1/1.2; JPEG q30 97.7 -> 95.4 with a light unsharp mask; as is 98.1, sharpened 97.3. The model
was trained through these shifts: what it survives, an inverse does not improve, and a sharpened
or re-exposed image is one it never saw. Not an ingredient of edge-calibrate.
"""
import csv, sys, numpy as np
from pathlib import Path
from PIL import Image, ImageEnhance, ImageFilter
from hemalite import shifts
from hemalite.contract import load_image, preprocess
from hemalite.edge.runtime import load_model
DATA = Path("../shared/data/all4")
split = sys.argv[1] if len(sys.argv) > 1 else "val"
man = "hemalite/models/test_split.csv" if split == "test" else f"runs/sweep/size288/splits/{split}.csv"
rows = [(r["path"], r["label"]) for r in csv.DictReader(open(man))]
model = load_model("hemalite/models/hemalite_int8.tflite")
spec = model.info.spec if hasattr(model.info, "spec") else None
labels = list(model.info.labels)
truth = np.array([labels.index(l) for _, l in rows])
base = [load_image(DATA / p) for p, _ in rows]
pil = lambda a: Image.fromarray(a)
def usm(r, p): return lambda a: np.asarray(pil(a).filter(ImageFilter.UnsharpMask(r, p, 0)))
def gain(g): return lambda a: np.asarray(ImageEnhance.Brightness(pil(a)).enhance(g))
def con(g): return lambda a: np.asarray(ImageEnhance.Contrast(pil(a)).enhance(g))
def ident(a): return a
cases = {
 ("brightness", 1.2): {"none": ident, "gain 1/1.2": gain(1/1.2), "gain 1/1.1": gain(1/1.1)},
 ("blur", 1.5): {"none": ident, "usm r2 p100": usm(2, 100), "usm r2 p200": usm(2, 200), "usm r1.5 p150": usm(1.5, 150), "usm r3 p150": usm(3, 150)},
 ("contrast", 1.2): {"none": ident, "contrast 1/1.2": con(1/1.2)},
 ("jpeg", 30): {"none": ident, "usm r2 p50": usm(2, 50)},
 (None, None): {"none": ident, "usm r2 p100": usm(2, 100), "gain 1/1.1": gain(1/1.1)},
}
for (name, v), invs in cases.items():
    shifted = [shifts.apply_shift(a, name, v) if name else a for a in base]
    for iname, f in invs.items():
        x = np.stack([preprocess(f(a), model.info.spec) for a in shifted])
        p = model.predict_batch(x)
        acc = (p.argmax(1) == truth).mean()
        nll = -np.log(np.maximum(p[np.arange(len(p)), truth], 1e-6)).mean()
        print(f"{split} {name} {v} | {iname:14s} best guess {acc*100:.1f} %  nll {nll:.3f}", flush=True)
