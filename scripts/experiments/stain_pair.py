"""Refer a sure call whose stain is drifting on two readings at once? (issue #30, session 18;
measured, not kept)

    .venv/bin/python scripts/experiments/floor.py val --out runs/s18/floor_val_new.csv
    .venv/bin/python scripts/experiments/stain_pair.py runs/s18/floor_val_new.csv

Under hue -30 the wrong calls the checks accept are Pro-B slides called Early at 0.996, whose
hue and stain strength have both gone toward their limits (a bluer stain turns and weakens
at once). This counts, per shift, the accepted images (floor.py's CSV, the product's
decisions) whose hue and strength are both more than P of the way to their limits, and how
many of those were right calls.

Session 18 (one run), P 0.5: validation hue -30 +2 (1 right), as is +2 (2 right), hue -15
+37 (36 right), saturation x0.6 +25 (25 right), contrast x0.8 +16 (16 right); test hue -30 +4
(1 right: 3 of its 4 wrong calls), hue -15 +35 (35 right). Not kept: a paler or bluer stain
the model survives moves the same two readings.
"""
from __future__ import annotations

from common import floor_csv  # this script's folder is on sys.path


SHIFTS = ("as is", "hue -15", "hue +15", "hue -30", "hue +30", "saturation x0.6",
          "contrast x0.8", "brightness x0.85", "jpeg q30", "blur r1.5")


def main() -> None:
    rows, _ = floor_csv(__doc__, "floor.py's output (the product's decisions)")
    for p in (0.4, 0.5, 0.6):
        line = f"P {p}:"
        for name in SHIFTS:
            accepted = [r for r in rows if r["shift"] == name and not r["reason"]]
            hit = []
            for r in accepted:
                near = {n: q for q, n, _ in r["limits"]}
                if near.get("hue", 0) > p and near.get("strength", 0) > p:
                    hit.append(r["call"] == r["truth"])
            line += f" | {name} +{len(hit)} ({sum(hit)} right) of {len(accepted)}"
        print(line)


if __name__ == "__main__":
    main()
