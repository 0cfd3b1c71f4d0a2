"""An unsure call near an acquisition limit: which floor and how near (issue #30, session 18;
adopted as hemalite.edge.assess.UNSURE_BELOW / hemalite.acquisition.NEAR_LIMIT)

    .venv/bin/python scripts/experiments/floor.py val --no-near-limit
    .venv/bin/python scripts/experiments/near_limit.py runs/s18/floor_val.csv

Reads floor.py's per-image CSV (the product's checks without the rule) and, per floor F and
position M, refers each accepted image whose top probability is under F and one of whose
readings is more than M of the way from training's median to its limit
(AcquisitionCheck.nearest_limits); M 0 is a plain floor. Prints, per shift, the share
referred and how right the accepted rest is.

Session 18 (one run each; referred and right among the accepted under as is / objective
x1.6 / x1.5 / x0.7 / contrast x0.8 / blur r1.5 / hue -30). Validation, where it was chosen:
  none       3.1 % 98.8 | 76.6 % 96.7 | 67.8 % 97.6 | 48.7 % 97.0 | 5.0 % 98.4 | 63.2 % 99.0 | 92.3 % 90.0
  F0.8 M0    3.8 % 99.2 | 78.2 % 100  | 70.1 % 100  | 50.6 % 97.7 | 8.4 % 100  | 65.9 % 98.9 | 95.8 % 90.9
  F0.7 M0.5  3.4 % 99.2 | 77.4 % 98.3 | 69.7 % 100  | 49.4 % 97.7 | 6.1 % 98.8 | 64.0 % 98.9 | 94.6 % 92.9
  F0.8 M0.5  3.4 % 99.2 | 78.2 % 100  | 70.1 % 100  | 50.2 % 97.7 | 6.9 % 99.2 | 65.9 % 98.9 | 95.8 % 90.9
  F0.9 M0.5  4.2 % 99.6 | 78.9 % 100  | 70.5 % 100  | 52.1 % 98.4 | 7.3 % 99.2 | 67.8 % 100  | 95.8 % 90.9
  F0.8 M0.75 3.1 % 98.8 | 77.4 % 98.3 | 69.7 % 100  | 49.4 % 97.0 | 5.4 % 98.4 | 65.5 % 98.9 | 95.0 % 92.3
F0.8 M0.5 kept: the gains of a plain floor of 0.8 at under half its cost as is (one image, a
wrong call, against three). Test split, read once to report:
  none       1.9 % 99.2 | 81.9 % 100  | 63.7 % 95.7 | 52.9 % 98.4 | 4.6 % 98.8 | 69.5 % 93.7 | 93.1 % 77.8
  F0.8 M0.5  1.9 % 99.2 | 82.6 % 100  | 65.6 % 97.8 | 55.2 % 99.1 | 4.6 % 98.8 | 71.8 % 98.6 | 95.8 % 63.6
and objective x0.6 94.2 % 93.3 -> 94.6 % 100. As is unchanged: its two wrong calls are sure
(Benign called Early at 0.97 and 0.99). Under hue -30 it refers unsure right calls: the wrong
calls there are Pro-B slides called Early at 0.996, which no floor reaches.

Then the REFERs' names (the decision unchanged): an out-of-domain image named after a
reading past P of the way to its limit, a focus fault named magnification when the cells
read past B toward the high magnification limit (an enlarged field reads as blurred:
upsampling by 1.6 halves the focus reading, and the red cells cut by the field's edge make
the scale read 1.1-1.4, not 1.6), B on the combined scale or on the leukocytes' size alone
(a defocus spreads the red cells' edges: blur r3 reads their radius 1.11x, the leukocytes
0.97x). Share of each fault's REFERs with the expected reason, validation:
  neither                  blur r1.5 93 %, r3 100, objective x0.6 94, x1.6 69, hue +30 88, -30 87
  P 0.5                    blur r1.5 97 %, r3 100, objective x0.6 98, x1.6 73, hue +30 92, -30 88
  P 0.5, B 0.5 scale       blur r1.5 90 %, r3 85,  objective x0.6 98, x1.6 80, hue +30 92, -30 88
  P 0.5, B 0.5 leukocytes  blur r1.5 89 %, r3 87,  objective x0.6 98, x1.6 82, hue +30 92, -30 88
  P 0.5, B 0.6 leukocytes  blur r1.5 90 %, r3 90,  objective x0.6 98, x1.6 82, hue +30 92, -30 88
  P 0.5, B 0.7 leukocytes  blur r1.5 90 %, r3 91,  objective x0.6 98, x1.6 80, hue +30 92, -30 88
(on the scale, B trades one fault's name for the other's: 0.6 gives x1.6 78 / blur r3 90.)
Kept: P 0.5 (hemalite.acquisition.NEAR_LIMIT), B 0.6 on the leukocytes (ENLARGED). Test
split, read once: neither 89 / 99 / 96 / 70 / 87 / 85 %; kept 92 / 90 / 100 / 85 / 93 / 85 %.
"""
from __future__ import annotations

from collections import Counter

import numpy as np
from common import floor_csv  # this script's folder is on sys.path

from hemalite import acquisition, shifts

GRID = ((0.0, 0.0), (0.7, 0.0), (0.8, 0.0), (0.9, 0.0), (0.7, 0.5), (0.8, 0.25), (0.8, 0.5),
        (0.8, 0.75), (0.9, 0.5), (0.9, 0.75))


def main() -> None:
    rows, check = floor_csv(__doc__, "floor.py --no-near-limit's output")
    for r in rows:
        r["position"] = r["limits"][0][0] if r["limits"] else 0.0
    print_floors(rows)
    print_reasons(rows, check)


def print_floors(rows: list[dict]) -> None:
    for floor, position in GRID:
        print(f"F{floor:g} M{position:g}")
        for name in dict.fromkeys(r["shift"] for r in rows):
            rs = [r for r in rows if r["shift"] == name]
            kept = [r for r in rs if not r["reason"]
                    and not (float(r["top"]) < floor and r["position"] > position)]
            right = np.mean([r["call"] == r["truth"] for r in kept]) if kept else float("nan")
            print(f"  {name:20s} referred {1 - len(kept) / len(rs):6.1%}, right among the "
                  f"accepted {right:6.1%}")


def print_reasons(rows: list[dict], check) -> None:
    """The faults' REFERs named for the expected reason when (P) an out-of-domain image is
    named after a reading past P of the way to its limit (technician order) and (B) a focus
    fault is named magnification when the cells read past B toward the high limit."""
    print("share of each fault's REFERs with the expected reason; as is: its reasons")
    grid = [(p, b, 0.0) for p, b in ((None, None), (0.5, None), (0.5, 0.4), (0.5, 0.45),
                                     (0.5, 0.5), (0.5, 0.55), (0.5, 0.6), (0.5, 0.7),
                                     (0.3, 0.5))]
    grid += [(0.5, b, check.ranges["scale"][1]) for b in (0.4, 0.5, 0.6, 0.7)]
    for p, b, high in grid:
        cue = "the leukocytes' size" if high else "the scale"
        line = f"  OOD named at P {p}, focus named magnification at B {b} of {cue}:"
        for name in ["as is", *(shifts.shift_name(*f) for f in shifts.FAULT_SHIFTS)]:
            expected = shifts.FAULT_SHIFTS.get(tuple(next(
                (k for k in shifts.FAULT_SHIFTS if shifts.shift_name(*k) == name), ())))
            counts = Counter(renamed(r, p, b, high) for r in rows if r["shift"] == name)
            referred = sum(v for k, v in counts.items() if k)
            line += (f"\n    as is: {dict((k, v) for k, v in counts.items() if k)}"
                     if expected is None else f" | {name} {counts[expected] / referred:.0%}")
        print(line)


def renamed(row: dict, p: float | None, b: float | None, high: float = 0.0) -> str:
    """The REFER's name under P and B (B on the leukocytes' size alone when `high`, the
    scale range's upper bound, is given: acquisition.AcquisitionCheck.faults' rule)."""
    reason, limits = row["reason"], row["limits"]
    if reason == acquisition.OUT_OF_FOCUS and b is not None and (
            float(row["leukocyte_scale"]) > np.exp(b * high) if high else any(
                n == "scale" and side == "high" and q > b for q, n, side in limits)):
        return acquisition.MAGNIFICATION
    if reason == "out-of-domain" and p is not None:
        near = [(acquisition.REASONS.index(acquisition.MEASURES[n][0]), n)
                for q, n, _ in limits if q > p]
        if near:
            return acquisition.MEASURES[min(near)[1]][0]
    return reason


if __name__ == "__main__":
    main()
