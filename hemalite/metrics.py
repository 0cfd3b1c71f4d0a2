"""Metrics: arrays in, numbers out. Shared by train, convert, edge and benchmarks.

scikit-learn does the classification metrics (it is in the train and bench extras and
imported only when called); what the edge summary needs is plain numpy.
"""
from __future__ import annotations

import numpy as np


def confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
    """Counts[true, predicted] as an int array (num_classes x num_classes)."""
    y_true, y_pred = np.asarray(y_true, int), np.asarray(y_pred, int)
    return np.bincount(y_true * num_classes + y_pred,
                       minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def reliability(y_true, probs, bins: int = 10) -> dict:
    """Per equal-width confidence bin: count, mean confidence and accuracy (for ECE/plots)."""
    probs = np.asarray(probs, float)
    conf, correct = probs.max(1), probs.argmax(1) == np.asarray(y_true)
    which = np.clip(np.digitize(conf, np.linspace(0.0, 1.0, bins + 1)[1:-1]), 0, bins - 1)
    out = {"edges": np.linspace(0.0, 1.0, bins + 1).tolist(), "count": [], "confidence": [],
           "accuracy": []}
    for b in range(bins):
        mask = which == b
        out["count"].append(int(mask.sum()))
        out["confidence"].append(float(conf[mask].mean()) if mask.any() else None)
        out["accuracy"].append(float(correct[mask].mean()) if mask.any() else None)
    return out


def expected_calibration_error(y_true, probs, bins: int = 10) -> float:
    """ECE: |accuracy - confidence| averaged over equal-width confidence bins, by count."""
    r, n = reliability(y_true, probs, bins), len(y_true)
    return float(sum(c / n * abs(a - f) for c, a, f in
                     zip(r["count"], r["accuracy"], r["confidence"]) if c))


def classification_metrics(y_true, probs, labels) -> dict:
    """Accuracy, per-class precision/recall/F1, macro-F1, one-vs-rest AUC-ROC, confusion, ECE."""
    from sklearn import metrics as skm  # train / bench extras only

    y_true, probs = np.asarray(y_true, int), np.asarray(probs, float)
    y_pred, k = probs.argmax(1), len(labels)
    p, r, f, s = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=list(range(k)), zero_division=0)
    present = np.unique(y_true)
    auc = {}
    for c in range(k):
        if c in present and len(present) > 1:
            auc[labels[c]] = float(skm.roc_auc_score(y_true == c, probs[:, c]))
    return {
        "n": int(len(y_true)),
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "macro_f1": float(skm.f1_score(y_true, y_pred, labels=list(range(k)),
                                       average="macro", zero_division=0)),
        "auc_ovr_macro": float(np.mean(list(auc.values()))) if auc else None,
        "per_class": {labels[c]: {"precision": float(p[c]), "recall": float(r[c]),
                                  "f1": float(f[c]), "support": int(s[c]),
                                  "auc_ovr": auc.get(labels[c])} for c in range(k)},
        "confusion_matrix": confusion_matrix(y_true, y_pred, k).tolist(),
        "ece": expected_calibration_error(y_true, probs),
        "reliability": reliability(y_true, probs),
        "labels": list(labels),
    }


def agreement(probs, reference) -> dict:
    """How closely one model's probabilities follow a reference model's on the same images."""
    probs, reference = np.asarray(probs, float), np.asarray(reference, float)
    return {"top1_agreement": float((probs.argmax(1) == reference.argmax(1)).mean()),
            "max_abs_diff": float(np.abs(probs - reference).max())}
