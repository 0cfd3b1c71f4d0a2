"""Which case rule? The candidates behind hemalite.cases, fitted on validation, measured on test.

    .venv/bin/python scripts/experiments/case_rules.py [--model hemalite/models/hemalite_int8.tflite]
        [--data-root ../shared/data/all4] [--seed 42] [--cases 4000]

A case call has two parts: which class the accepted fields support (label), and when they
disagree too much for one class (discordance). Candidates:
  label        summed log-probabilities (each floored at 1/512) | majority vote (ties: the
               summed log-probabilities) | mean probability;
  discordance  evidence: the mean per-field log(p_own_best / p_label) (hemalite.cases) |
               share: the share of accepted fields whose own label is not the case's.
For each pair, the discordance threshold and min_fields are fitted on pseudo-cases of the
VALIDATION split exactly as hemalite.cases.fit_rule does (threshold: fewest single-class
pseudo-cases referred as discordant plus mixed ones accepted, k = 3, 5, 10; min_fields: the
fewest accepted fields right >= 99.5 % among called), then measured on pseudo-cases of the
TEST split (k = 3, 5, 10; 4000 of each kind per k; the bench's protocol). The validation
split is the one `hemalite train` made (seed 42, 80/10/10, byte-identical files together),
regenerated here and checked against the model's shipped test split. The evidence /
summed-log-probability row must equal hemalite.cases' own fit and evaluation (checked).
Pseudo-cases, not patients: the dataset has no patient IDs. An experiment, not part of
hemalite.
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from hemalite import cases
from hemalite.contract import load_batch
from hemalite.convert.case_rule import assess_images  # the decision edge-classify makes
from hemalite.train import data

LABELS_RULES = ("logsum", "vote", "mean")
DISCORDANCE = ("evidence", "share")
SIZES = (3, 5, 10)


def label_of(p: np.ndarray, logp: np.ndarray, how: str) -> int:
    if how == "logsum":
        return cases.case_label(logp)
    if how == "mean":
        return int(np.argmax(p.mean(0)))
    votes = np.bincount(p.argmax(1), minlength=p.shape[1])
    tied = np.flatnonzero(votes == votes.max())
    return int(tied[np.argmax(logp.sum(0)[tied])])


def disagreement(p: np.ndarray, logp: np.ndarray, label: int, how: str) -> float:
    if how == "evidence":
        return cases.discordance(logp, label)
    return float(np.mean(p.argmax(1) != label))


def call(p, reasons, how, min_fields, threshold, eps=cases.CaseRule.eps):
    """(label index or None for REFER) from the accepted fields."""
    ok = np.array([r is None for r in reasons])
    if ok.sum() < max(1, min_fields):
        return None
    p = p[ok]
    logp = cases.log_evidence(p, eps)
    label = label_of(p, logp, how[0])
    return None if disagreement(p, logp, label, how[1]) > threshold else label


def fit(p, reasons, y, how, n, seed=0):
    """(min_fields, threshold) as hemalite.cases.fit_rule fits them, for this pair."""
    rng = np.random.default_rng(seed)
    grid = np.round(np.arange(0.05, 3.0 + 0.025, 0.05), 6)
    ok = np.array([r is None for r in reasons])
    errors = np.zeros(len(grid))
    for k in SIZES:
        for mixed in (False, True):
            values = []
            for idx, _ in cases.pseudo_cases(y, k, n, rng, mixed):
                own = idx[ok[idx]]
                if len(own):
                    q = p[own]
                    logp = cases.log_evidence(q, cases.CaseRule.eps)
                    values.append(disagreement(q, logp, label_of(q, logp, how[0]), how[1]))
            values = np.array(values)[:, None]
            errors += ((values <= grid) if mixed else (values > grid)).mean(0)
    threshold = cases._middle_of_first_run(grid, errors)
    for m in range(1, 11):
        drawn = cases.pseudo_cases(y[ok], m, n, rng)
        labels = [call(p[ok][idx], [None] * m, how, 1, threshold) for idx, _ in drawn]
        called = [(got, c) for got, (_, (c,)) in zip(labels, drawn) if got is not None]
        if called and np.mean([got == c for got, c in called]) >= 0.995:
            return m, threshold
    return 10, threshold


def measure(p, reasons, y, how, min_fields, threshold, n, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    out = {}
    for k in SIZES:
        single = cases.pseudo_cases(y, k, n, rng)
        mixed = cases.pseudo_cases(y, k, n, rng, mixed=True)
        got = [call(p[i], [reasons[j] for j in i], how, min_fields, threshold) for i, _ in single]
        called = [(g, c) for g, (_, (c,)) in zip(got, single) if g is not None]
        out[k] = {"right": np.mean([g == c for g, c in called]),
                  "wrong": sum(g != c for g, c in called),
                  "single_referred": np.mean([g is None for g in got]),
                  "mixed_referred": np.mean([call(p[i], [reasons[j] for j in i], how, min_fields,
                                                  threshold) is None for i, _ in mixed])}
    return out


def splits(root: str, seed: int, model_test: str):
    samples, labels, _ = data.scan_dataset(root)
    parts, _ = data.split_dataset(samples, seed=seed)
    with open(model_test, newline="") as fh:
        shipped = [r["path"] for r in csv.DictReader(fh)]
    if [s.path for s in parts["test"]] != shipped:
        raise SystemExit(f"the regenerated test split is not {model_test}: another seed?")
    return parts, labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="hemalite/models/hemalite_int8.tflite")
    parser.add_argument("--manifest", default="hemalite/models/test_split.csv",
                        help="the model's test split, to check the regenerated one")
    parser.add_argument("--data-root", default="../shared/data/all4")
    parser.add_argument("--seed", type=int, default=42, help="the split's seed (hemalite train)")
    parser.add_argument("--cases", type=int, default=4000, help="pseudo-cases per kind and k")
    args = parser.parse_args()
    parts, labels = splits(args.data_root, args.seed, args.manifest)
    assessed = {}
    for name in ("val", "test"):
        from hemalite.metadata import read_model_info

        spec = read_model_info(args.model).spec
        x, kept, _ = load_batch([Path(args.data_root, s.path) for s in parts[name]], spec)
        p, reasons = assess_images(args.model, x)
        assessed[name] = (p, reasons, np.array([parts[name][i].label for i in kept]))
        print(f"{name}: {len(kept)} images, {sum(r is not None for r in reasons)} referred one "
              "by one")
    reference = cases.fit_rule(*assessed["val"], cases.CaseFitConfig(cases=2000))
    print(f"hemalite.cases.fit_rule on validation: {reference.describe()}")
    print("\n| label | discordance | fitted on validation: min fields, threshold | "
          + " | ".join(f"test k={k}: right among called / single referred / mixed referred"
                       for k in SIZES) + " |")
    print("|---|---|---|" + "---|" * len(SIZES))
    for how in [(lab, dis) for dis in DISCORDANCE for lab in LABELS_RULES]:
        min_fields, threshold = fit(*assessed["val"], how, 2000)
        if how == ("logsum", "evidence"):
            assert (min_fields, threshold) == (reference.min_fields, reference.max_discordance)
        result = measure(*assessed["test"], how, min_fields, threshold, args.cases)
        print(f"| {how[0]} | {how[1]} | {min_fields}, {threshold:.2f} | " + " | ".join(
            f"{100 * r['right']:.2f} % ({r['wrong']} wrong) / {100 * r['single_referred']:.1f} %"
            f" / {100 * r['mixed_referred']:.1f} %" for r in result.values()) + " |")


if __name__ == "__main__":
    main()
