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
from __future__ import annotations

from pathlib import Path

import numpy as np
from common import arguments, split_rows  # this script's folder is on sys.path
from PIL import Image, ImageEnhance, ImageFilter

from hemalite import shifts
from hemalite.contract import load_image, preprocess
from hemalite.edge.runtime import load_model


def unsharp(radius: float, percent: int):
    return lambda a: np.asarray(Image.fromarray(a).filter(
        ImageFilter.UnsharpMask(radius, percent, 0)))


def gain(g: float):
    return lambda a: np.asarray(ImageEnhance.Brightness(Image.fromarray(a)).enhance(g))


def contrast(g: float):
    return lambda a: np.asarray(ImageEnhance.Contrast(Image.fromarray(a)).enhance(g))


def same(a):
    return a


CASES = {  # shift -> the inverses tried
    ("brightness", 1.2): {"none": same, "gain 1/1.2": gain(1 / 1.2), "gain 1/1.1": gain(1 / 1.1)},
    ("blur", 1.5): {"none": same, "usm r2 p100": unsharp(2, 100), "usm r2 p200": unsharp(2, 200),
                    "usm r1.5 p150": unsharp(1.5, 150), "usm r3 p150": unsharp(3, 150)},
    ("contrast", 1.2): {"none": same, "contrast 1/1.2": contrast(1 / 1.2)},
    ("jpeg", 30): {"none": same, "usm r2 p50": unsharp(2, 50)},
    (None, None): {"none": same, "usm r2 p100": unsharp(2, 100), "gain 1/1.1": gain(1 / 1.1)},
}


def main() -> None:
    args = arguments(__doc__).parse_args()
    rows = split_rows(args.split, args.run)
    model = load_model(args.model)
    truth = np.array([model.info.labels.index(label) for _, label in rows])
    base = [load_image(Path(args.data, p)) for p, _ in rows]
    for (name, value), inverses in CASES.items():
        shifted = [shifts.apply_shift(a, name, value) if name else a for a in base]
        for label, inverse in inverses.items():
            p = model.predict_batch(np.stack([preprocess(inverse(a), model.info.spec)
                                              for a in shifted]))
            nll = -np.log(np.maximum(p[np.arange(len(p)), truth], 1e-6)).mean()
            print(f"{args.split} {name} {value} | {label:14s} best guess "
                  f"{(p.argmax(1) == truth).mean() * 100:.1f} %  nll {nll:.3f}", flush=True)


if __name__ == "__main__":
    main()
