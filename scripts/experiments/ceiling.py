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
bar, at most 3 % referred), and how many wrong calls sit at the split's highest top
probability (255/256 for the int8 model), where no floor can refer them alone; the same for
a threshold on the margin and on the domain feature score.
"""
from __future__ import annotations

import argparse
import csv
import json
import shlex
import sys
from collections import Counter
from pathlib import Path

import numpy as np

SITE_RIGHT, SITE_ACCEPTED, MEAN_RIGHT = 0.94, 0.985, 0.97  # issue #29's bars per site
AS_IS_REFERRED, AS_IS_ACCEPTED = 0.03, 0.993  # issue #30's as-is bars


def best_floor(per_image: list) -> tuple[float, float, float] | None:
    """(floor, right, accepted right) of the floor that leaves the most images right with
    at least SITE_ACCEPTED of the accepted right; None when no floor does. A floor only
    adds to the product's other checks: what they refer stays referred."""
    top = np.array([p[0] or 0.0 for p in per_image])
    right = np.array([bool(p[1]) for p in per_image])
    # an image that could not be read (no probabilities) is never accepted
    open_ = np.array([p[0] is not None and p[2] in (None, "low-confidence") for p in per_image])
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
    return lines + wrong_guesses(protocol, setting)


def labelled(row: dict, setting: str) -> tuple[list[str], dict] | None:
    """A site's per-image records by file, with the model's labels (the row's `labels`;
    older records: the class folders sorted, all4's order); None when the records carry no
    probabilities and files (calibration_protocol.py before session 20). The truth of a
    record is its file's class folder."""
    records = row[setting]["per_image"]
    if any(len(p) < 5 or p[3] is None for p in records):
        return None
    return (row.get("labels") or sorted({p[4].split("/")[0] for p in records}),
            {p[4]: p for p in records})


def truth(file: str) -> str:
    return file.split("/")[0]


def wrong_guesses(protocol: list[dict], setting: str) -> list[str]:
    """Where the ceiling is lost: the wrong best guesses of all sites by true class and
    guess, and how often the guess is right on benign against malignant alone (records with
    probabilities and files only: calibration_protocol.py since session 20)."""
    pairs, screening, n = Counter(), 0, 0
    for row in protocol:
        site = labelled(row, setting)
        if site is None:
            return []
        labels, records = site
        for file, p in records.items():
            true, guess = truth(file), labels[int(np.argmax(p[3]))]
            n += 1
            screening += (true == labels[0]) == (guess == labels[0])  # labels[0]: Benign
            if guess != true:
                pairs[(true, guess)] += 1
    return ["", f"Wrong best guesses over all {len(protocol)} sites ({sum(pairs.values())} of "
            f"{n}), true -> guessed: "
            + ", ".join(f"{a} -> {b} {k}" for (a, b), k in pairs.most_common())
            + f". Benign against malignant alone, the best guess is right on {screening / n:.1%}."]


def ensemble_table(protocol: list[dict], other: list[dict], setting: str) -> list[str]:
    """Per site, the best guess of each model and of the mean of their probabilities, image
    by image (both protocols run with --seed alike, so each site holds the same images;
    per-image probabilities and files: calibration_protocol.py since session 20). The
    labels are the models' own order, the same for both."""
    lines = [f"### Two calibrated models' mean probabilities ({setting} ingredients): the "
             "best guess", "", "| site | this model | the other | their mean |",
             "|---|---:|---:|---:|"]
    means = []
    if [r["site"] for r in protocol] != [r["site"] for r in other]:
        raise SystemExit("--with: the two protocols hold other sites")
    for mine, theirs in zip(protocol, other):
        if labelled(mine, setting) is None or labelled(theirs, setting) is None:
            raise SystemExit("--with: both protocols need per-image probabilities "
                             "(calibration_protocol.py since session 20)")
        (labels, a), (_, b) = labelled(mine, setting), labelled(theirs, setting)
        if set(a) != set(b):
            raise SystemExit(f"--with: site {mine['site']} holds other images in the two "
                             "protocols (run both with the same --seed and manifest)")
        files = sorted(a)
        both = [np.argmax(np.add(a[f][3], b[f][3])) for f in files]
        right = np.mean([labels[k] == truth(f) for k, f in zip(both, files)])
        guess = [np.mean([bool(d[f][1]) for f in files]) for d in (a, b)]
        lines.append(f"| {mine['site']} | {guess[0]:.1%} | {guess[1]:.1%} | {right:.1%} |")
        if mine["site"] != "as is":
            means.append((*guess, right))
    m = np.mean(means, axis=0)
    lines.append(f"| mean of the {len(means)} shifted sites | {m[0]:.1%} | {m[1]:.1%} | "
                 f"{m[2]:.1%} |")
    return lines


def as_is_table(path: Path) -> list[str]:
    with open(path, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["shift"] == "as is"]
    top = np.array([float(r["top"]) for r in rows])
    right = np.array([r["call"] == r["truth"] for r in rows])
    checked = np.array([not r["reason"] for r in rows])
    wrong = ~right & checked
    highest = top.max()
    lines = ["### As is: a floor on the top probability over the product's checks", "",
             f"{len(rows)} images; the checks refer {1 - checked.mean():.1%}; the accepted are "
             f"{right[checked].mean():.1%} right ({wrong.sum()} wrong, top probabilities "
             + ", ".join(f"{t:.4f}" for t in sorted(top[wrong]))
             + f"); {np.sum(wrong & (top >= highest))} at the highest top probability of the "
             f"split ({highest:.4f}), where no floor can refer it alone.", "",
             "| floor | referred | right of accepted |", "|---|---|---|"]
    for f in np.unique(np.r_[0.0, top]):
        accepted = checked & (top >= f)
        if accepted.any() and (f == 0.0 or f >= 0.5):
            lines.append(f"| {f:.4f} | {1 - accepted.mean():.1%} | {right[accepted].mean():.1%} |")
    share = needed(-top, checked, right)
    lines += ["", "A floor reaches 99.3 % right among the accepted "
              + ("never" if share is None else f"when it refers {share:.1%}")
              + f" (the bar: at most {AS_IS_REFERRED:.0%} referred)."]
    margin = np.array([float(r["margin"]) for r in rows])
    score = np.array([float(r["domain_score"]) for r in rows])
    for name, doubt in (("the margin over the second label", -margin),
                        ("the domain feature score", score)):
        share = needed(doubt, checked, right)
        lines.append(f"Referring by {name} instead (a threshold on it, after the checks): "
                     "99.3 % right among the accepted "
                     + ("never." if share is None else f"at {share:.1%} referred."))
    return lines


def needed(doubt: np.ndarray, checked: np.ndarray, right: np.ndarray) -> float | None:
    """The least share referred by a threshold on `doubt` (accept what the checks accept and
    doubt no more than the threshold) that leaves AS_IS_ACCEPTED of the accepted right;
    None when no threshold does."""
    for t in np.unique(doubt)[::-1]:  # the most lenient threshold first
        accepted = checked & (doubt <= t)
        if accepted.any() and right[accepted].mean() >= AS_IS_ACCEPTED:
            return float(1 - accepted.mean())
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protocol", type=Path, help="calibration_protocol.py's JSON")
    parser.add_argument("--setting", default="default", help="its ingredient set")
    parser.add_argument("--with", dest="other", type=Path, help="another model's protocol "
                        "JSON (same manifest and --seed): the two models' mean per site")
    parser.add_argument("--floor-csv", type=Path, help="floor.py's per-image CSV")
    parser.add_argument("--out", type=Path, help="write the Markdown here too")
    args = parser.parse_args()
    lines = [f"Made by `python scripts/experiments/ceiling.py {shlex.join(sys.argv[1:])}`", ""]
    if args.protocol:
        protocol = json.loads(args.protocol.read_text())
        lines += sites_table(protocol, args.setting) + [""]
        if args.other:
            lines += ensemble_table(protocol, json.loads(args.other.read_text()),
                                    args.setting) + [""]
    if args.floor_csv:
        lines += as_is_table(args.floor_csv) + [""]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
