"""The benchmark report's figures (matplotlib, bench extra): confusion float vs int8, latency,
reliability."""
from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from hemalite.benchmarks.report import variant_of  # noqa: E402
from hemalite.files import atomic_path  # noqa: E402
from hemalite.plots import plot_confusion  # noqa: E402


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def latency_plot(report: dict, path: Path) -> Path:
    """Box plot of invoke latency per variant and thread count."""
    data, names = [], []
    for r in report["models"]:
        for t, lat in r.get("latency", {}).items():
            data.append(lat["samples_ms"])
            names.append(f"{r['variant']}\n{t} thr")
    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(data)), 4))
    ax.boxplot(data, showfliers=True)
    ax.set_xticks(range(1, len(names) + 1), names, fontsize=8)
    ax.set(ylabel="invoke latency (ms)", title="Invoke latency per variant and thread count")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def reliability_plot(report: dict, path: Path) -> Path:
    """Reliability diagram: accuracy against confidence per bin, one line per variant."""
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    for r in report["models"]:
        rel = r["accuracy"]["reliability"]
        pts = [(c, a) for c, a in zip(rel["confidence"], rel["accuracy"]) if c is not None]
        ax.plot(*zip(*pts), "o-", label=f"{r['variant']} (ECE {r['accuracy']['ece']:.3f})")
    ax.set(xlabel="confidence", ylabel="accuracy", xlim=(0, 1.02), ylim=(0, 1.02),
           title="Reliability diagram")
    ax.legend(fontsize=8)
    return _save(fig, path)


def audit_plot(report: dict, path: Path) -> Path:
    """Accuracy per audit input (shifts and ablations), one bar per variant."""
    audited = [r for r in report["models"] if r.get("audit")]
    names = list(audited[0]["audit"])
    width = 0.8 / len(audited)
    fig, ax = plt.subplots(figsize=(max(7, 0.55 * len(names) * max(1, len(audited) / 2)), 4.5))
    for i, r in enumerate(audited):
        acc = [100 * r["audit"][n]["accuracy"] for n in names]
        ax.bar(np.arange(len(names)) + i * width, acc, width, label=r["variant"])
    ax.axhline(97, color="k", lw=0.8, ls="--", label="97 %")
    ax.set_xticks(np.arange(len(names)) + width * (len(audited) - 1) / 2, names,
                  rotation=45, ha="right", fontsize=8)
    ax.set(ylabel="accuracy (%)", ylim=(0, 100), title="Audit: accuracy per input")
    ax.legend(fontsize=8, loc="lower left")
    return _save(fig, path)


def domain_plot(report: dict, path: Path) -> Path:
    """Left: coverage vs accuracy over the confidence floor and the domain threshold (first
    checked variant). Right: the domain score of in-domain test images against each OOD kind."""
    r = next(r for r in report["models"] if r.get("domain"))
    d = r["domain"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, points in d["curves"].items():
        pts = [(p["coverage"], p["accuracy"]) for p in points if p["accuracy"] is not None]
        left.plot(*zip(*pts), ".-", label=f"over {name.replace('_', ' ')}")
    left.set(xlabel="coverage (share accepted)", ylabel="accuracy on accepted",
             title=f"{r['variant']}: coverage / accuracy, test split")
    left.legend(fontsize=8)
    groups = {"test split (in domain)": d["test"]["scores"]}
    groups.update({k: v["scores"] for k, v in d["ood"].items() if v["scores"]})
    top = max(max(v) for v in groups.values() if v)
    bins = np.linspace(0, top, 40)
    for name, scores in groups.items():
        right.hist(scores, bins=bins, alpha=0.5, density=True, label=name)
    right.axvline(d["threshold"], color="k", ls="--", label="threshold")
    right.set(xlabel="domain feature score", ylabel="density", title="Domain score")
    right.legend(fontsize=7)
    return _save(fig, path)


def all_plots(report: dict, out: Path) -> list[Path]:
    labels = report["data"]["labels"]
    by = {r["variant"]: r for r in report["models"]}  # row names, unique (report.row_names)
    kind = {r["variant"]: variant_of(r.get("path", r["variant"])) for r in report["models"]}
    shown = [name for name in by if kind[name] in ("keras", "float32", "int8")] or list(by)
    # named for what it shows: confusion_int8.png when only int8 was benchmarked; an A/B's
    # row names ('int8 (old/model_int8.tflite)') are no file name: confusion_models.png
    joined = "_vs_".join(shown)
    compared = "float_vs_int8" if "int8" in {kind[n] for n in shown} and len(shown) > 1 else \
        joined if re.fullmatch(r"[\w.-]+", joined) else "models"
    confusion = out / f"confusion_{compared}.png"
    plot_confusion({v: np.asarray(by[v]["accuracy"]["confusion_matrix"]) for v in shown},
                   labels, confusion)
    made = [confusion, reliability_plot(report, out / "reliability.png")]
    if any(r.get("latency") for r in report["models"]):
        made.insert(1, latency_plot(report, out / "latency.png"))
    if any(r.get("audit") for r in report["models"]):
        made.append(audit_plot(report, out / "audit.png"))
    if any(r.get("domain") for r in report["models"]):
        made.append(domain_plot(report, out / "domain.png"))
    return made
