"""Test-time views of the bundled int8 file (or another .tflite) on the validation split:
each image also as its mirror image, through the audit's magnification at x1.25 and x0.8,
and sharpened; answers averaged in log-probability; every audit shift. An experiment, not
part of hemalite (grounding_ablation.md, session 13). Reads the validation split only.

    .venv/bin/python scripts/experiments/test_time_views.py [MODEL.tflite] [--split-from RUN]
"""
from __future__ import annotations

import argparse

import numpy as np
from PIL import Image, ImageFilter

from hemalite import shifts
from hemalite.convert.export import load_run
from hemalite.edge.runtime import default_model_path, load_model
from hemalite.train import data

VIEWS = {
    "id": lambda a: a,
    "m1.25": lambda a: shifts.magnification(a, 1.25),
    "m0.8": lambda a: shifts.magnification(a, 0.8),
    "hflip": lambda a: a[:, ::-1].copy(),
    "sharp": lambda a: np.asarray(Image.fromarray(a).filter(
        ImageFilter.UnsharpMask(radius=2, percent=80, threshold=0))),
}
COMBOS = [("id",), ("id", "hflip"), ("id", "m1.25"), ("id", "m0.8"), ("id", "m1.25", "m0.8"),
          ("id", "sharp"), ("id", "hflip", "m1.25", "m0.8")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default=str(default_model_path()))
    parser.add_argument("--split-from", default="runs/cellsS")
    args = parser.parse_args()
    split = load_run(args.split_from)
    x, y, _ = data.load_pixels(split.data_dir, split.samples("val"), split.spec, False)
    model = load_model(args.model, 1)
    cases = [("as is", None)] + [(shifts.shift_name(n, v), (n, v)) for n, v in shifts.AUDIT_SHIFTS]
    logp = {}
    for name, shift in cases:
        xs = x if shift is None else np.stack([shifts.apply_shift(img, *shift) for img in x])
        for view, f in VIEWS.items():
            probs = model.predict_batch(np.stack([f(img) for img in xs]))
            logp[name, view] = np.log(np.clip(probs, 1e-6, 1.0))
        print(f"{name:18s} " + "  ".join(
            f"{v} {100 * (logp[name, v].argmax(1) == y).mean():5.1f}" for v in VIEWS), flush=True)
    for combo in COMBOS:
        acc = [100 * float((sum(logp[n, v] for v in combo).argmax(1) == y).mean())
               for n, _ in cases]
        print(f"{' + '.join(combo):28s} as is {acc[0]:.1f}, mean of 12 {np.mean(acc[1:]):.2f}, "
              f"worst {min(acc[1:]):.1f}")


if __name__ == "__main__":
    main()
