"""Does a calibrated model still refer what is not a smear of its kind? Each of some audit
shifts of the validation split is a site (10 images per class calibrate, `edge-calibrate`'s
defaults); then the other lab's photographs (../shared/data/other_labs/bccd, healthy white
cells) go through edge-classify's pipeline with `--model SITE.tflite` and its defaults.
Counts per site: called malignant (Early, Pre or Pro, accepted), Benign, referred.

    .venv/bin/python scripts/experiments/calibrated_ood.py hemalite/models/hemalite_int8.tflite \
        --manifest runs/sweep/size288/splits/val.csv [--shifts -1,0,4,7,9,10]
"""
from __future__ import annotations

import argparse
import csv
import tempfile
from pathlib import Path

from hemalite import shifts
from hemalite.contract import is_image_name
from hemalite.edge import calibrate, classify
from hemalite.edge.runtime import load_model

from calibration_protocol import make_site  # noqa: E402  (same folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--data", default="../shared/data/all4")
    parser.add_argument("--other", default="../shared/data/other_labs/bccd")
    parser.add_argument("--shifts", default="-1,0,4,7,9,10")
    args = parser.parse_args()
    with open(args.manifest, newline="") as fh:
        rows = [(r["path"], r["label"]) for r in csv.DictReader(fh)]
    other = sorted(str(p) for p in Path(args.other).rglob("*") if is_image_name(p.name))
    print("| site | called malignant | Benign | referred (reasons) |\n|---|---:|---:|---|")
    for i in map(int, args.shifts.split(",")):
        shift = None if i < 0 else shifts.AUDIT_SHIFTS[i]
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            make_site(rows, Path(args.data), shift, folder, 10, 0)
            out = str(folder / "site.tflite")
            calibrate.calibrate(calibrate.CalibrateConfig(str(folder / "site"), out), args.model)
            model = load_model(out)
            summary = classify.Summary(model.info.labels)
            checks = classify.Checks(model.domain.min_confidence, True, None)
            results = list(classify.classify_paths(model, [(f, None) for f in other], summary,
                                                   1, checks))
        malignant = sum(r.label not in (classify.REFER, "Benign", None) for r in results)
        benign = sum(r.label == "Benign" for r in results)
        referred = sum(r.label == classify.REFER for r in results)
        name = "as is" if shift is None else shifts.shift_name(*shift)
        print(f"| {name} | {malignant} of {len(results)} | {benign} | {referred} "
              f"({', '.join(f'{k} {v}' for k, v in sorted(summary.reasons.items()))}) |",
              flush=True)


if __name__ == "__main__":
    main()
