"""Validation-split accuracy of a run's Keras model under every audit shift: the numbers
training recipes are chosen on (benchmarks/reports/grounding_ablation.md), never the test split.

    .venv/bin/python scripts/experiments/val_shifts.py runs/cellsF [runs/cellsG ...]
        [--views 4] [--normalise-scale] [--ensemble] [--errors] [--stain] [--bundled]

--views 2 / 4 averages the probabilities over the image and its 90-degree rotation (and the
two flips): test-time augmentation. --normalise-scale rescales each image so that its
leukocytes' median inscribed radius is the training median (a stand-in for a lab's objective
being measured and undone before the model). --ensemble adds a row for the runs' mean
probabilities (one model file holding them all would cost their summed size and latency).
--errors lists the images each run gets wrong as is. --stain adds two rows outside the audit
(and outside its mean and worst): the stain balance (hemalite.shifts.stain) x0.75 and x1.33.
--bundled adds a row for the bundled float32 .tflite (whose Keras run is not in the repo) on
the first run's validation split. All are experiments, not part of hemalite.

In the notebook, benchmarks/reports/grounding_ablation.md: every validation table from
session 5 on. F against G ("What moves what"), --normalise-scale and --views 4 (session 5),
H, I, G2, the averaged rows and --errors (session 6), R (7), S and T (8), U, V, G3 and R2
with --stain --bundled (9), W, W2 and W3 (10), X and Y (11), and the control W + W2
--ensemble (12).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from hemalite import cells, shifts
from hemalite.convert.export import load_run
from hemalite.train import data

TRAINING_MEDIAN_RADIUS = 12.9  # px at 224: median over 200 training images (all4)


def leukocyte_radius(rgb: np.ndarray) -> float | None:
    """Median over the leukocyte blobs of the largest inscribed circle's radius, in pixels:
    touching cells merge into one blob but keep one cell's radius."""
    import cv2

    mask = cells.leukocyte_mask(rgb).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask)
    distance = cv2.distanceTransform(mask, cv2.DIST_L2, 5)
    radii = [distance[labels == i].max() for i in range(1, count)
             if stats[i, cv2.CC_STAT_AREA] >= cells.MIN_CELL_PIXELS]
    return float(np.median(radii)) if radii else None


def normalise_scale(rgb: np.ndarray, band: float = 1.05) -> np.ndarray:
    radius = leukocyte_radius(rgb)
    if radius is None:
        return rgb
    factor = float(np.clip(TRAINING_MEDIAN_RADIUS / radius, 0.6, 1.7))
    return rgb if 1 / band < factor < band else shifts.magnification(rgb, factor)


def views(x: np.ndarray, n: int) -> list[np.ndarray]:
    out = [x, np.rot90(x, 1, axes=(1, 2)), x[:, :, ::-1], np.rot90(x, 3, axes=(1, 2))[:, ::-1]]
    return out[:n]


class Bundled:
    """The bundled float32 .tflite, answering like a loaded run (one invoke per image)."""

    def __init__(self):
        from hemalite.edge.runtime import default_model_path, load_model

        self.model = self  # main() calls run.model.predict and names rows by run.path.name
        self.path = Path("bundled-float32")
        self.tflite = load_model(Path(default_model_path()).with_name("hemalite_float32.tflite"))
        self.labels = self.tflite.info.labels

    def predict(self, x: np.ndarray, **_) -> np.ndarray:
        return np.stack([self.tflite.predict(img.astype(np.uint8)) for img in x])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--views", type=int, default=1, choices=(1, 2, 4))
    parser.add_argument("--normalise-scale", action="store_true")
    parser.add_argument("--ensemble", action="store_true")
    parser.add_argument("--errors", action="store_true")
    parser.add_argument("--stain", action="store_true")
    parser.add_argument("--bundled", action="store_true")
    args = parser.parse_args()
    loaded = [load_run(r) for r in args.runs]
    first = loaded[0]
    samples = first.samples("val")
    x, y, _ = data.load_pixels(first.data_dir, samples, first.spec, progress=False)
    if args.bundled:
        loaded.insert(0, Bundled())
    cases = [("as is", None)] + [(shifts.shift_name(n, v), (n, v)) for n, v in shifts.AUDIT_SHIFTS]
    audit_rows = len(cases)
    if args.stain:
        cases += [(shifts.shift_name("stain", v), ("stain", v)) for v in (0.75, 1.33)]
    table = {run.path.name: [] for run in loaded}
    if args.ensemble:
        table["ensemble"] = []
    for name, shift in cases:
        xs = x if shift is None else np.stack([shifts.apply_shift(img, *shift) for img in x])
        if args.normalise_scale:
            xs = np.stack([normalise_scale(img) for img in xs])
        every = []
        for run in loaded:
            probs = np.mean([run.model.predict(v.astype(np.float32), batch_size=32, verbose=0)
                             for v in views(xs, args.views)], axis=0)
            table[run.path.name].append(100 * float((probs.argmax(1) == y).mean()))
            every.append(probs)
            if args.errors and shift is None:
                for i in np.flatnonzero(probs.argmax(1) != y):
                    print(f"  {run.path.name} wrong as is: {samples[i].path} called "
                          f"{run.labels[probs[i].argmax()]} {probs[i].max():.2f}")
        if args.ensemble:
            table["ensemble"].append(100 * float((np.mean(every, 0).argmax(1) == y).mean()))
        print(f"{name:18s}", "  ".join(f"{k} {v[-1]:5.1f}" for k, v in table.items()), flush=True)
    for k, v in table.items():
        v = v[:audit_rows]
        print(f"{k}: mean of the {len(v) - 1} shifts {np.mean(v[1:]):.2f}, worst {min(v[1:]):.1f}")


if __name__ == "__main__":
    main()
