"""Test-time augmentation: the mean of the model's probabilities over flips and quarter turns
(issue #29, session 17; not kept)

    .venv/bin/python scripts/experiments/tta.py val

Session 17, validation (one run), best guess with 1 / 2 / 4 / 8 views: as is 98.1 / 98.5 /
98.5 / 98.5 %; lamp x1.2 96.6 / 96.2 / 96.2 / 96.6; blur r1.5 97.3 / 96.2 / 96.6 / 96.2;
objective x0.7 95.0 / 95.8 / 95.0 / 95.0; x1.5 93.5 / 93.9 / 93.1 / 93.5; hue -15 93.9 / 94.3
/ 93.9 / 93.5. The model was trained with flips and turns: averaging over them moves the
best guess by less than a point either way, for up to 8 invokes an image.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from common import arguments, split_rows  # this script's folder is on sys.path

from hemalite import shifts
from hemalite.contract import load_image, preprocess
from hemalite.edge.runtime import load_model


SHIFTS = ((None, None), ("brightness", 1.2), ("contrast", 1.2), ("blur", 1.5), ("jpeg", 30),
          ("magnification", 0.7), ("magnification", 1.5), ("hue", -15), ("rotation", 90))
VIEWS = (("1", [0]), ("2 flip", [0, 1]), ("4 rot", [0, 3, 5, 4]), ("8", list(range(8))))


def views(x: np.ndarray) -> list[np.ndarray]:
    """The eight flips and quarter turns of an image."""
    return [x, x[:, ::-1], x[::-1], np.rot90(x), np.rot90(x, 3), np.rot90(x, 2),
            np.rot90(x[:, ::-1]), np.rot90(x[:, ::-1], 3)]


def main() -> None:
    args = arguments(__doc__).parse_args()
    rows = split_rows(args.split, args.run)
    model = load_model(args.model)
    truth = np.array([model.info.labels.index(label) for _, label in rows])
    base = [load_image(Path(args.data, p)) for p, _ in rows]
    for name, value in SHIFTS:
        x = [preprocess(shifts.apply_shift(a, name, value) if name else a, model.info.spec)
             for a in base]
        probs = np.stack([np.stack([model.predict(np.ascontiguousarray(v)) for v in views(i)])
                          for i in x])  # images, views, classes
        out = []
        for label, chosen in VIEWS:
            p = probs[:, chosen].mean(1)
            accepted = p.max(1) >= 0.6
            right = p.argmax(1) == truth
            out.append(f"{label}: {right.mean() * 100:.1f} (floor 0.6 refers "
                       f"{(~accepted).mean() * 100:.1f}, right of accepted "
                       f"{(right & accepted).sum() / max(accepted.sum(), 1) * 100:.1f})")
        print(args.split, name, value, " | ".join(out), flush=True)


if __name__ == "__main__":
    main()
