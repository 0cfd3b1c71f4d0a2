"""Plots shared by train and benchmarks (matplotlib, imported only when called)."""
from __future__ import annotations

import os

import numpy as np

from hemalite.files import atomic_path


def plot_confusion(matrices: dict[str, np.ndarray], labels, path: str | os.PathLike) -> None:
    """Side-by-side confusion matrices (one panel per model) saved as PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(matrices), figsize=(4.2 * len(matrices), 4), squeeze=False)
    for ax, (title, cm) in zip(axes[0], matrices.items()):
        cm = np.asarray(cm)
        ax.imshow(cm, cmap="Blues")
        for (i, j), v in np.ndenumerate(cm):
            ax.text(j, i, str(v), ha="center", va="center",
                    color="white" if v > cm.max() / 2 else "black")
        ax.set(xticks=range(len(labels)), yticks=range(len(labels)), xticklabels=labels,
               yticklabels=labels, xlabel="predicted", ylabel="true", title=title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
