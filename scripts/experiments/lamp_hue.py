"""How a brighter lamp moves each class's leukocyte hue reading (session 16, for edge-calibrate's
acquisition ranges).

    .venv/bin/python scripts/experiments/lamp_hue.py [--split val] [--lamp 1.2]

The acquisition check's stain hue (hemalite.acquisition.measure) of every image of the split,
as is and under the lamp (hemalite.shifts.brightness), at the bundled model's input size:
per class, the median and 90th percentile. Session 16, validation, lamp x1.2: Benign 252.0 ->
255.1, Early 249.5 -> 253.1, Pre 246.1 -> 249.1, Pro 259.7 -> 272.7 degrees (median): the
magenta Pro slides move +13, the rest +3-4, so a lamp site's hue has two modes.
"""
from __future__ import annotations

import argparse
import collections
import csv
from pathlib import Path

import numpy as np

from hemalite import acquisition, shifts
from hemalite.contract import load_image, preprocess
from hemalite.edge.runtime import default_model_path, load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="val")
    parser.add_argument("--lamp", type=float, default=1.2)
    parser.add_argument("--data", default="../shared/data/all4")
    args = parser.parse_args()
    spec = load_model(default_model_path()).info.spec
    with open(f"runs/sweep/size288/splits/{args.split}.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    for lamp in (None, args.lamp):
        hues = collections.defaultdict(list)
        for row in rows:
            rgb = load_image(Path(args.data) / row["path"])
            rgb = shifts.brightness(rgb, lamp) if lamp else rgb
            hues[row["label"]].append(acquisition.measure(preprocess(rgb, spec))["hue"])
        print(f"lamp x{lamp or 1}: " + ", ".join(
            f"{label} {np.nanmedian(v):.1f} (90th {np.nanpercentile(v, 90):.1f})"
            for label, v in sorted(hues.items())))


if __name__ == "__main__":
    main()
