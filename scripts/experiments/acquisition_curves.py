"""The acquisition check's operating point: for each measure, as its range widens, how many
images a shift sends to REFER and how right the model's best guess is on the rest.

    .venv/bin/python scripts/experiments/acquisition_curves.py MODEL.tflite RUN_DIR \
        --out benchmarks/reports/acquisition

Fits hemalite.acquisition on RUN_DIR's training split (as `hemalite convert` does), then
shifts the validation split (never the test split) through each fault a lab brings at
several strengths: lamp (brightness), objective (magnification), focus (blur), stain (hue).
For each measure and width k (robust standard deviations of training images), and each
shift: the share referred by that measure alone, and the accuracy of the model's best guess
on the images it accepts. Writes curves.json, curves.md and curves.png. Issue #30's
operating point (hemalite.acquisition.WIDTHS) was chosen from these curves.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from hemalite import acquisition, shifts
from hemalite.contract import load_image, preprocess
from hemalite.edge.runtime import load_model

# the fault each measure is for, at the strengths it is tried at
FAMILIES = {
    "brightness": ("brightness", (0.5, 0.6, 0.7, 0.8, 0.85)),
    "clipped": ("brightness", (1.1, 1.2, 1.3, 1.4)),
    "scale": ("magnification", (0.5, 0.6, 0.7, 0.8, 1.25, 1.5, 1.6, 2.0)),
    "focus": ("blur", (0.75, 1.0, 1.5, 2.0, 3.0)),
    "strength": ("hue", (-40.0, -30.0, -20.0, -15.0, 15.0, 30.0)),
    "hue": ("hue", (-40.0, -30.0, -20.0, -15.0, 15.0, 20.0, 30.0, 40.0)),
    "saturation": ("saturation", (0.4, 0.5, 0.6, 0.8)),
}
WIDTHS = tuple(np.arange(2.0, 8.01, 0.5))


def read_split(run: Path, split: str) -> list[tuple[str, str]]:
    import csv

    with open(run / "splits" / f"{split}.csv", newline="") as fh:
        return [(r["path"], r["label"]) for r in csv.DictReader(fh)]


def z_scores(check: acquisition.AcquisitionCheck, name: str, measures: list[dict],
             centre: float, spread: float) -> np.ndarray:
    """How far each image's measure lies from training's, signed, in robust sds."""
    d = np.array([acquisition._deviation(name, check.values(m)[name],
                                         check.medians.get(name, 1.0)) for m in measures])
    return (d - centre) / spread


def beyond(z: np.ndarray, name: str, k: float) -> np.ndarray:
    side = acquisition.SIDES.get(name)
    z = np.nan_to_num(z, nan=0.0)  # an unreadable measure refers nothing
    return (z < -k) if side == "low" else (z > k) if side == "high" else (np.abs(z) > k)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("run", type=Path, help="a run directory (its splits/ are read)")
    parser.add_argument("--data", default="../shared/data/all4")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/reports/acquisition"))
    args = parser.parse_args()
    model = load_model(args.model)
    spec, labels = model.info.spec, model.info.labels

    def pixels(path):
        return preprocess(load_image(Path(args.data, path)), spec)

    train = [acquisition.measure(pixels(p)) for p, _ in read_split(args.run, "train")]
    check = acquisition.fit(train)
    val = read_split(args.run, "val")
    x = [pixels(p) for p, _ in val]
    y = np.array([labels.index(c) for _, c in val])
    results = {"model": args.model, "images": len(x), "widths": list(WIDTHS), "measures": {}}
    for name, (shift, strengths) in FAMILIES.items():
        d = np.array([acquisition._deviation(name, check.values(m)[name],
                                             check.medians.get(name, 1.0)) for m in train])
        d = d[np.isfinite(d)]
        centre, spread = float(np.median(d)), acquisition.robust_sd(d)
        rows = {}
        for strength in (None, *strengths):
            imgs = x if strength is None else [shifts.apply_shift(i, shift, strength) for i in x]
            right = np.array([model.predict(i).argmax() for i in imgs]) == y
            z = z_scores(check, name, [acquisition.measure(i) for i in imgs], centre, spread)
            key = "as is" if strength is None else shifts.shift_name(shift, strength)
            rows[key] = {"best_guess": float(right.mean()), "curve": [
                {"k": float(k), "referred": float(beyond(z, name, k).mean()),
                 "accuracy_accepted": float(right[~beyond(z, name, k)].mean())
                 if (~beyond(z, name, k)).any() else None} for k in WIDTHS]}
            print(name, key, f"best guess {right.mean():.3f}", flush=True)
        results["measures"][name] = {"shift": shift, "centre": centre, "spread": spread,
                                     "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "curves.json").write_text(json.dumps(results, indent=1))
    (args.out / "curves.md").write_text(markdown(results))
    plot(results, args.out / "curves.png")


def markdown(results: dict) -> str:
    lines = [f"# Acquisition check: operating-point curves ({results['images']} validation "
             "images)", "", "Each cell: referred by that measure alone / accuracy of the best "
             "guess on the rest, at width k (robust sds of training images).", ""]
    shown = [k for k in results["widths"] if k in (2.5, 3.0, 3.5, 4.0, 5.0, 6.0)]
    for name, m in results["measures"].items():
        lines += [f"## {name} ({m['shift']})", "",
                  "| images | best guess | " + " | ".join(f"k={k:g}" for k in shown) + " |",
                  "|---|---:|" + "---:|" * len(shown)]
        for key, row in m["rows"].items():
            cells = {c["k"]: c for c in row["curve"]}
            lines.append(f"| {key} | {row['best_guess']:.1%} | " + " | ".join(
                f"{cells[k]['referred']:.0%} / "
                + (f"{cells[k]['accuracy_accepted']:.1%}" if cells[k]['accuracy_accepted']
                   is not None else "-") for k in shown) + " |")
        lines.append("")
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["measures"])
    fig, axes = plt.subplots(2, len(names), figsize=(4 * len(names), 7), squeeze=False)
    for col, name in enumerate(names):
        for key, row in results["measures"][name]["rows"].items():
            k = [c["k"] for c in row["curve"]]
            axes[0, col].plot(k, [c["referred"] for c in row["curve"]], label=key)
            axes[1, col].plot(k, [c["accuracy_accepted"] for c in row["curve"]], label=key)
        axes[0, col].set_title(f"{name}: referred")
        axes[1, col].set_title("accuracy on the accepted")
        axes[1, col].axhline(0.97, color="grey", lw=0.5)
        axes[1, col].set_xlabel("width k (robust sd)")
        axes[0, col].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


if __name__ == "__main__":
    main()
