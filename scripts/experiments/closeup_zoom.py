"""How close are the bench's "healthy cells closer up"? Each one's zoom, and the decision on it.

    .venv/bin/python scripts/experiments/closeup_zoom.py [--crop 2.5]
        [--model hemalite/models/hemalite_int8.tflite] [--data-root ../shared/data/all4]
        [--manifest hemalite/models/test_split.csv]

The bench's stand-in for single-cell images of healthy white cells from another lab is
hemalite.shifts.closeup: each Benign image cropped to 2.5 x the longer side of its largest
stained blob. That blob is often wider than one cell (touching cells merge), so the crop is
wider and the zoom (model side / crop side) smaller than a single cell's would be. This
prints each close-up's zoom next to what `edge-classify` decides on it (the same assess()), sorted by zoom, and how many
lie within the magnifications training jitters over (hemalite.shifts.MAGNIFY). It reads the
test split's Benign images as out-of-domain material, as the bench does; nothing is tuned on
it. `--crop 1.5` makes tighter crops, in which the blob fills two thirds of the frame (closer,
we assume, to a single-cell camera's image). An experiment, not part of hemalite.

In the notebook, benchmarks/reports/grounding_ablation.md: session 6, "What the close-ups
measure" (the session-5 model); rerun for the bundled model in MODEL_CARD.md's paragraph on
the close-ups.
"""
from __future__ import annotations

import argparse

import numpy as np

from hemalite import cells, shifts
from hemalite.contract import preprocess
from hemalite.edge.assess import assess
from hemalite.edge.runtime import load_model
from hemalite.train import data  # read_manifest, load_pixels: the one decode and resize



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="hemalite/models/hemalite_int8.tflite")
    parser.add_argument("--manifest", default="hemalite/models/test_split.csv")
    parser.add_argument("--data-root", default="../shared/data/all4")
    parser.add_argument("--healthy", default="Benign", help="the healthy class's label")
    parser.add_argument("--crop", type=float, default=2.5,
                        help="crop side / the blob's longer side (the bench's close-ups: 2.5)")
    args = parser.parse_args()
    model = load_model(args.model, num_threads=2)
    spec = model.info.spec
    labels = model.info.labels
    healthy = [s for s in data.read_manifest(args.manifest, labels)
               if labels[s.label] == args.healthy]
    images, _, failures = data.load_pixels(args.data_root, healthy, spec, progress=False)
    for line in failures:
        print(f"skipped {line}")
    rows = []
    for pixels in images:
        found = cells.find_cells(pixels)
        crop = shifts.closeup(pixels, args.crop)
        if not found or crop is None:
            continue
        zoom = spec.width / (args.crop * max(found[0].width, found[0].height))
        result = assess(model, preprocess(np.ascontiguousarray(crop), spec),
                        model.domain.min_confidence if model.domain else 0.0)
        label = labels[int(result.probabilities.argmax())]
        rows.append((zoom, label, float(result.probabilities.max()), result.reason or "accepted"))
    rows.sort()
    for zoom, label, p, decision in rows:
        malignant = decision == "accepted" and label != args.healthy
        flag = "  <- accepted as malignant" if malignant else ""
        print(f"zoom x{zoom:4.2f}  {label:8s} {p:.2f}  {decision}{flag}")
    decisions = [r[3] if r[3] != "accepted" else
                 ("accepted as malignant" if r[1] != args.healthy else "accepted as healthy")
                 for r in rows]
    print(", ".join(f"{d}: {decisions.count(d)}" for d in sorted(set(decisions))))
    zooms = np.array([r[0] for r in rows])
    inside = (zooms <= shifts.MAGNIFY[1]).sum()
    print(f"{len(rows)} close-ups; zoom median x{np.median(zooms):.2f} "
          f"(x{zooms.min():.2f}-x{zooms.max():.2f}); {inside} at most x{shifts.MAGNIFY[1]:g}, "
          "inside training's magnification jitter")


if __name__ == "__main__":
    main()
