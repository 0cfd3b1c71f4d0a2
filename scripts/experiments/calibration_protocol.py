"""Issue #29's protocol: every audit shift of a split is one site. 10 images per class of the
shifted images calibrate (`edge-calibrate`'s own function), the rest go through
edge-classify's own pipeline with its defaults, a REFER counting as not right.

    .venv/bin/python scripts/experiments/calibration_protocol.py MODEL.tflite \
        --manifest runs/all4/splits/val.csv --out runs/protocol_val [--ablation]

Shifted images are written as PNG to a temporary folder (never into the repository) and
classified from there, like a lab's files. Prints and writes (OUT/protocol.md, .json) per
shift: right before / after, referred, right among the accepted; with --ablation each
ingredient set of hemalite.edge.calibrate on every shift. Tune on the validation split;
the test split is for the final table only.
"""
from __future__ import annotations

import argparse
import csv
import json
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from hemalite import shifts
from hemalite.contract import load_image
from hemalite.edge import assess as assessing
from hemalite.edge import calibrate, classify
from hemalite.edge.runtime import load_model

ABLATION = {"none": (), "zoom": ("zoom",), "zoom+acquisition": ("zoom", "acquisition"),
            "zoom+domain+acquisition": ("zoom", "domain", "acquisition"),
            "zoom+colour+domain+acquisition": ("zoom", "colour", "domain", "acquisition"),
            "default (+floor)": calibrate.DEFAULT_INGREDIENTS,
            "all (+head)": calibrate.INGREDIENTS}


def make_site(rows, data: Path, shift, folder: Path, per_class: int, seed: int):
    """Write the shifted images: per_class of each class to folder/site, the rest to
    folder/rest, in label folders (PNG: no second compression)."""
    rng = np.random.default_rng(seed)
    by_class: dict[str, list[str]] = {}
    for path, label in rows:
        by_class.setdefault(label, []).append(path)
    for label, paths in by_class.items():
        chosen = set(rng.choice(len(paths), min(per_class, len(paths)), replace=False))
        for i, path in enumerate(paths):
            rgb = load_image(data / path)
            if shift is not None:
                rgb = shifts.apply_shift(rgb, *shift)
            part = "site" if i in chosen else "rest"
            out = folder / part / label / (Path(path).stem + ".png")
            out.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rgb).save(out)


def run_rest(model_path: str, rest: Path) -> dict:
    """edge-classify's pipeline at its defaults over the rest: right, referred, accepted."""
    model = load_model(model_path)
    floor = model.domain.min_confidence if model.domain else 0.0
    summary = classify.Summary(model.info.labels)
    checks = classify.Checks(floor, True, None)
    files = sorted(str(p) for p in rest.rglob("*.png"))
    results = list(classify.classify_paths(model, [(f, str(rest)) for f in files], summary,
                                           1, checks))
    right = sum(r.label == r.truth for r in results)
    referred = sum(r.label == classify.REFER for r in results)
    accepted = [r for r in results if r.label != classify.REFER]
    return {"images": len(results), "right": right / len(results),
            "best_guess": sum(r.guess == r.truth for r in results) / len(results),
            "referred": referred / len(results),
            "accepted_right": (sum(r.label == r.truth for r in accepted) / len(accepted)
                               if accepted else None),
            "reasons": dict(summary.reasons),
            # per image, for the operating-point analysis: best guess's probability, right,
            # the REFER reason (None = accepted); then its probabilities and its file (within
            # the site's folder), to compare or combine models image by image (ceiling.py)
            "per_image": [[r.top[0][1] if r.top else None, r.guess == r.truth, r.reason,
                           r.probabilities, str(Path(r.source).relative_to(rest))]
                          for r in results]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--data", default="../shared/data/all4")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--per-class", type=int, default=10)
    parser.add_argument("--ablation", action="store_true")
    parser.add_argument("--shifts", default="all", help="'all' or comma-separated indices "
                        "into hemalite.shifts.AUDIT_SHIFTS (-1: as is)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--other", default="", help="other shifts as sites instead, "
                        "comma-separated name:value (hemalite.shifts.SHIFTS), e.g. hue:-30")
    parser.add_argument("--sets", default="", help="comma-separated ingredient sets of "
                        f"ABLATION ({', '.join(ABLATION)}) instead of none and the default")
    parser.add_argument("--prior", type=float, default=calibrate.PRIOR,
                        help="the head's pull towards the trained weights (calibrate.PRIOR)")
    parser.add_argument("--near-limit-at-sites", action="store_true",
                        help="let hemalite.edge.assess.near_limit run on calibrated models too "
                             "(session 18: measured, not adopted)")
    args = parser.parse_args()
    calibrate.PRIOR = args.prior
    if args.near_limit_at_sites:
        assessing.NEAR_LIMIT_AT_SITES = True
    with open(args.manifest, newline="") as fh:
        rows = [(r["path"], r["label"]) for r in csv.DictReader(fh)]
    sites = [None, *shifts.AUDIT_SHIFTS]
    if args.shifts != "all":
        sites = [None if int(i) < 0 else shifts.AUDIT_SHIFTS[int(i)]
                 for i in args.shifts.split(",")]
    if args.other:  # shifts the audit does not have, e.g. "hue:-30,brightness:1.4"
        sites = [(name, float(value)) for name, value in
                 (item.split(":") for item in args.other.split(","))]
    sets = ABLATION if args.ablation else {"none": (), "default": calibrate.DEFAULT_INGREDIENTS}
    if args.sets:
        sets = {name: ABLATION[name] for name in args.sets.split(",")}
    args.out.mkdir(parents=True, exist_ok=True)
    labels = list(load_model(args.model).info.labels)
    table = []
    for shift in sites:
        name = "as is" if shift is None else shifts.shift_name(*shift)
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            make_site(rows, Path(args.data), shift, folder, args.per_class, args.seed)
            row = {"site": name, "labels": labels}
            for label, ingredients in sets.items():
                if not ingredients:
                    row[label] = run_rest(args.model, folder / "rest")
                    continue
                out = str(folder / f"{label}.tflite")
                report = calibrate.calibrate(calibrate.CalibrateConfig(
                    str(folder / "site"), out, ingredients=ingredients), args.model)
                row[label] = {**run_rest(out, folder / "rest"),
                              "zoom": report["site_calibration"]["zoom"],
                              "hue": report["site_calibration"]["hue"],
                              "saturation": report["site_calibration"]["saturation"],
                              "seconds": report["seconds"],
                              "cv_right": report["after"]["right"]["value"]}
            table.append(row)
        print(json.dumps(row), flush=True)
        (args.out / "protocol.json").write_text(json.dumps(table, indent=1))
    (args.out / "protocol.md").write_text(markdown(table, list(sets)))


def markdown(table: list[dict], sets: list[str]) -> str:
    lines = ["| site | " + " | ".join(f"{s}: right / referred / right of accepted"
                                       for s in sets) + " |",
             "|---|" + "---|" * len(sets)]
    for row in table:
        cells = []
        for s in sets:
            r = row[s]
            acc = "-" if r["accepted_right"] is None else f"{r['accepted_right']:.1%}"
            cells.append(f"{r['right']:.1%} / {r['referred']:.1%} / {acc}"
                         + (f" (zoom {r['zoom']:g}" if "zoom" in r else "")
                         + (f", hue {r['hue']:+g}, sat x{r['saturation']:g}"
                            if r.get("hue") or r.get("saturation", 1) != 1 else "")
                         + (")" if "zoom" in r else ""))
        lines.append(f"| {row['site']} | " + " | ".join(cells) + " |")
    means = {s: np.mean([row[s]["right"] for row in table if row["site"] != "as is"])
             for s in sets}
    lines.append("| mean of the shifts | " + " | ".join(f"{means[s]:.1%}" for s in sets) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
