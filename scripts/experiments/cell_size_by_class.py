"""Could each image be rescaled to a standard leukocyte size (undoing another objective)?
The median blob area (hemalite.domain.cell_measures) per class on the validation split, as
is, under the audit's magnifications and blur. An experiment (grounding_ablation.md,
session 13); reads the validation split only.

    .venv/bin/python scripts/experiments/cell_size_by_class.py [--split-from RUN]
"""
from __future__ import annotations

import argparse

import numpy as np

from hemalite import domain, shifts
from hemalite.convert.export import load_run
from hemalite.train import data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split-from", default="runs/cellsS")
    split = load_run(parser.parse_args().split_from)
    x, y, _ = data.load_pixels(split.data_dir, split.samples("val"), split.spec, False)
    for name, shift in (("as is", None), ("magnification x1.5", ("magnification", 1.5)),
                        ("magnification x0.7", ("magnification", 0.7)), ("blur r1.5", ("blur", 1.5))):
        xs = x if shift is None else [shifts.apply_shift(img, *shift) for img in x]
        area = np.array([domain.cell_measures(img)["cell_area"] for img in xs])
        log = np.log(np.maximum(area, 1.0))
        per = ", ".join(f"{label} {np.median(area[y == c]):.0f} (sd {log[(y == c) & (area > 0)].std():.2f})"
                        for c, label in enumerate(split.labels))
        print(f"{name:18s} median area {np.median(area):.0f} px; per class (log-area sd): {per}")


if __name__ == "__main__":
    main()
