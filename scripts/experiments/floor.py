"""A confidence floor for the bundled model: what it refers under each shift (issue #30,
session 18)

    .venv/bin/python scripts/experiments/floor.py val --no-near-limit [--out runs/s18/floor_val.csv]

Each image of the split, as is and under the audit's shifts and the faults
(hemalite.shifts.AUDIT_SHIFTS, FAULT_SHIFTS), goes through the product's own assessment
(hemalite.edge.assess.assess with the bundled model's checks, probes included, no floor;
--no-near-limit: without session 18's rules on readings near their limit, as it found them).
One CSV row per image and shift: the truth, the call, its top probability, its margin over
the second, the domain feature score, the REFER reason and the acquisition readings; then,
per floor, the share referred and how right the accepted rest is.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from common import arguments, split_rows  # this script's folder is on sys.path

from hemalite import acquisition, shifts
from hemalite.contract import load_image, preprocess
from hemalite.edge import assess as assessing
from hemalite.edge.runtime import load_model

FLOORS = (0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--no-near-limit", action="store_true",
                        help="without session 18's near-limit rules (what near_limit.py reads)")
    args = parser.parse_args()
    if args.no_near_limit:  # no reading is ever near its limit
        acquisition.NEAR_LIMIT = acquisition.ENLARGED = float("inf")
    out = args.out or Path(f"runs/s18/floor_{args.split}.csv")
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = split_rows(args.split, args.run)
    model = load_model(args.model)
    labels = model.info.labels
    check = model.domain.acquisition_check
    images = [preprocess(load_image(Path(args.data, p)), model.info.spec) for p, _ in rows]
    conditions = [None, *shifts.AUDIT_SHIFTS, *shifts.FAULT_SHIFTS]
    records = []
    for shift in conditions:
        name = "as is" if shift is None else shifts.shift_name(*shift)
        for px, (path, truth) in zip(images, rows):
            x = px if shift is None else shifts.apply_shift(px, *shift)
            a = assessing.assess(model, x)
            values = check.values(a.measures) if a.measures else {}
            records.append({"shift": name, "path": path, "truth": truth,
                            "call": labels[int(np.argmax(a.probabilities))],
                            "top": f"{a.probabilities.max():.4f}", "reason": a.reason or "",
                            "margin": f"{np.ptp(np.sort(a.probabilities)[-2:]):.4f}",
                            "domain_score": f"{a.domain_score or 0:.4f}",
                            **{k: f"{v:.4f}" for k, v in values.items()},
                            "leukocyte_scale": f"{check.leukocyte_scale(a.measures or {}):.4f}"})
    with open(out, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    print(f"{'shift':20s} " + " ".join(f"floor {f:<14g}" for f in FLOORS))
    for shift in conditions:
        name = "as is" if shift is None else shifts.shift_name(*shift)
        rs = [r for r in records if r["shift"] == name]
        line = f"{name:20s}"
        for f in FLOORS:
            acc = [r for r in rs if not r["reason"] and float(r["top"]) >= f]
            right = np.mean([r["call"] == r["truth"] for r in acc]) if acc else float("nan")
            line += f" ref {1 - len(acc) / len(rs):5.1%} acc {right:6.1%}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
