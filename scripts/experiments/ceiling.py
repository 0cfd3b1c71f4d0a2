"""What any referral rule could reach with the bundled model: the ceilings behind issues #29
and #30's bars (session 20)

    .venv/bin/python scripts/experiments/ceiling.py \
        --protocol benchmarks/reports/calibration/protocol_test_s19.json \
        --floor-csv runs/s20/floor_test.csv [--out benchmarks/reports/calibration/ceiling_test.md]

A REFER counts as not right, so on any site no referral rule, however clever, makes more
images right than the model's best guess does: the best guess is the ceiling of "right".
Per calibrated site of the protocol (calibration_protocol.py's per-image records, the
default ingredients): the best guess, the product's own operating point, and the best a
confidence floor can do on top of the product's other checks (any floor, the site's own
0.6 included: the most images right with at least 98.5 % of the accepted right). Then the
mean of the best guesses over the shifted sites against #29's 97 %.

From floor.py's per-image CSV (the product's checks on a split as is, no floor): how much a
floor on the top probability must refer before the accepted are 99.3 % right (#30's as-is
bar, at most 3 % referred), and how many wrong calls sit at the int8 model's highest
probability (255/256), where no confidence rule can reach them.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

SITE_RIGHT, SITE_ACCEPTED, MEAN_RIGHT = 0.94, 0.985, 0.97  # issue #29's bars per site
AS_IS_REFERRED, AS_IS_ACCEPTED = 0.03, 0.993  # issue #30's as-is bars
TOP_INT8 = 255 / 256


def best_floor(per_image: list) -> tuple[float, float, float] | None:
    """(floor, right, accepted right) of the floor that leaves the most images right with
    at least SITE_ACCEPTED of the accepted right; None when no floor does. A floor only
    adds to the product's other checks: what they refer stays referred."""
    top = np.array([p[0] or 0.0 for p in per_image])
    right = np.array([bool(p[1]) for p in per_image])
    open_ = np.array([p[2] in (None, "low-confidence") for p in per_image])
    best = None
    for f in np.unique(np.r_[0.0, top]):
        accepted = open_ & (top >= f)
        if not accepted.any():
            continue
        acc = right[accepted].mean()
        if acc >= SITE_ACCEPTED and (best is None or (right & accepted).mean() > best[1]):
            best = (float(f), float((right & accepted).mean()), float(acc))
    return best


def sites_table(protocol: list[dict], setting: str) -> list[str]:
    lines = [f"### Calibrated sites ({setting} ingredients): the best guess is the ceiling",
             "", "| site | best guess (ceiling of right) | product: right / referred / "
             "right of accepted | best floor: floor, right, right of accepted |",
             "|---|---|---|---|"]
    guesses = []
    for row in protocol:
        r = row[setting]
        b = best_floor(r["per_image"])
        floor = "none reaches 98.5 %" if b is None else f"{b[0]:.3f}, {b[1]:.1%}, {b[2]:.1%}"
        reach = "" if r["best_guess"] >= SITE_RIGHT else " (under 94 %)"
        lines.append(f"| {row['site']} | {r['best_guess']:.1%}{reach} | {r['right']:.1%} / "
                     f"{r['referred']:.1%} / {r['accepted_right']:.1%} | {floor} |")
        if row["site"] != "as is":
            guesses.append(r["best_guess"])
    lines += ["", f"Mean best guess over the {len(guesses)} shifted sites: "
              f"**{np.mean(guesses):.1%}** (the mean bar: {MEAN_RIGHT:.0%} right, a REFER "
              "not right)."]
    return lines


def as_is_table(path: Path) -> list[str]:
    with open(path, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["shift"] == "as is"]
    top = np.array([float(r["top"]) for r in rows])
    right = np.array([r["call"] == r["truth"] for r in rows])
    checked = np.array([not r["reason"] for r in rows])
    wrong = ~right & checked
    lines = ["### As is: a floor on the top probability over the product's checks", "",
             f"{len(rows)} images; the checks refer {1 - checked.mean():.1%}; the accepted are "
             f"{right[checked].mean():.1%} right ({wrong.sum()} wrong, top probabilities "
             + ", ".join(f"{t:.3f}" for t in sorted(top[wrong]))
             + f"); {np.sum(wrong & (top >= TOP_INT8))} at the int8 model's highest "
             "probability (255/256).", "",
             "| floor | referred | right of accepted |", "|---|---|---|"]
    needed = None
    for f in np.unique(np.r_[0.0, top]):
        accepted = checked & (top >= f)
        if not accepted.any():
            break
        referred, acc = 1 - accepted.mean(), right[accepted].mean()
        if f == 0.0 or f >= 0.5:
            lines.append(f"| {f:.3f} | {referred:.1%} | {acc:.1%} |")
        if needed is None and acc >= AS_IS_ACCEPTED:
            needed = (f, referred)
    lines += ["", "A floor reaches 99.3 % right among the accepted "
              + ("never (the wrong calls at 255/256 stay)" if needed is None else
                 f"at {needed[0]:.3f}, referring {needed[1]:.1%}")
              + f" (the bar: at most {AS_IS_REFERRED:.0%} referred)."]
    margin = np.array([float(r["margin"]) for r in rows])
    score = np.array([float(r["domain_score"]) for r in rows])
    for name, doubt in (("the margin over the second label", -margin),
                        ("the domain feature score", score)):
        share = ranked(doubt, checked, right)
        lines.append(f"Referring by {name} instead (the most doubtful first, after the "
                     f"checks): 99.3 % right among the accepted at {share:.1%} referred.")
    return lines


def ranked(doubt: np.ndarray, checked: np.ndarray, right: np.ndarray) -> float:
    """The share referred once the accepted are AS_IS_ACCEPTED right, referring the images
    the checks accept in order of doubt, the most doubtful first."""
    accepted = checked.copy()
    for i in np.argsort(-doubt):
        if right[accepted].mean() >= AS_IS_ACCEPTED:
            break
        accepted[i] = False
    return 1 - accepted.mean()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protocol", type=Path, help="calibration_protocol.py's JSON")
    parser.add_argument("--setting", default="default", help="its ingredient set")
    parser.add_argument("--floor-csv", type=Path, help="floor.py's per-image CSV")
    parser.add_argument("--out", type=Path, help="write the Markdown here too")
    args = parser.parse_args()
    lines = ["Made by `python scripts/experiments/ceiling.py " + " ".join(sys.argv[1:]) + "`", ""]
    if args.protocol:
        lines += sites_table(json.loads(args.protocol.read_text()), args.setting) + [""]
    if args.floor_csv:
        lines += as_is_table(args.floor_csv) + [""]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
