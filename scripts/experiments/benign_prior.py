"""A prior toward Benign at calibrated sites: does it win back the benign cells called
malignant, the calibrated ceiling's main loss? (issue #29, session 20; not kept)

    .venv/bin/python scripts/experiments/benign_prior.py \
        benchmarks/reports/calibration/protocol_val_s20_probs.json \
        benchmarks/reports/calibration/protocol_test_s20_probs.json

Each calibrated site's per-image probabilities (calibration_protocol.py, default
ingredients, seed 0), Benign's log-probability raised by b before the best guess; the mean
best guess over the 12 shifted sites and the unshifted site's, per b. Session 20:

    b    validation shifted / as is    test shifted / as is
    0    97.62 / 98.64                 96.77 / 98.17
    0.5  97.51 / 98.64                 96.88 / 98.17
    1    97.55 / 98.19                 97.03 / 98.17
    1.5  97.13 / 98.19                 96.99 / 98.17
    2    97.06 / 98.19                 96.54 / 98.17
    3    95.74 / 97.29                 95.51 / 97.72

Validation, where b would be chosen, is best without it: the benign cells taken for blasts
are taken surely, and a prior strong enough to reach them turns about as many right calls
on malignant images into wrong ones.
"""
from __future__ import annotations

import json
import sys

import numpy as np

BIASES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0)


def sites(path: str, setting: str = "default (+floor)"):
    """(site, probabilities, truth index) per site; all4's labels are its sorted folders."""
    out = []
    for row in json.loads(open(path).read()):
        records = [p for p in row[setting]["per_image"] if p[3] is not None]
        labels = sorted({p[4].split("/")[0] for p in records})
        out.append((row["site"], np.array([p[3] for p in records], float),
                    np.array([labels.index(p[4].split("/")[0]) for p in records])))
    return out


def best_guess(split, bias: float) -> tuple[float, float]:
    """(mean over the shifted sites, the unshifted site) of the best guess, Benign first."""
    right = []
    for _, probs, truth in split:
        logp = np.log(np.clip(probs, 1e-4, 1.0))
        logp[:, 0] += bias
        right.append(float((logp.argmax(1) == truth).mean()))
    return float(np.mean(right[1:])), right[0]


def main() -> None:
    splits = [sites(path) for path in sys.argv[1:]]
    for b in BIASES:
        print(f"{b:<4g} " + "   ".join("%.2f / %.2f" % tuple(100 * np.array(best_guess(s, b)))
                                      for s in splits))


if __name__ == "__main__":
    main()
