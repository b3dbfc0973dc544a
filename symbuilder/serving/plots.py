"""The PNGs `symbuilder evaluate` draws, headless: the confusion matrix and the ROC curve.
(A build's training curves are SVG, written without a plotting library: export/curves.py.)"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

from ..files import write_atomic


def _pyplot() -> Any:
    import matplotlib  # lazy: matplotlib costs ~0.3 s to import, and only plots need it
    matplotlib.use("Agg")  # headless: no display on servers and CI
    import matplotlib.pyplot as plt  # lazy: after the backend is chosen
    return plt


def plot_confusion_matrix(counts: Any, classes: Sequence[str], path: str) -> None:
    """Counts per (true, predicted) class, each cell labelled with its count."""
    plt = _pyplot()
    k = len(classes)
    size = min(12.0, 2.5 + 0.6 * k)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(counts, cmap="Blues")
    ax.set_xticks(range(k), labels=list(classes), rotation=45, ha="right")
    ax.set_yticks(range(k), labels=list(classes))
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    top = counts.max() if counts.size else 0
    for i in range(k):
        for j in range(k):
            ax.text(j, i, str(counts[i][j]), ha="center", va="center",
                    color="white" if top and counts[i][j] > top / 2 else "black")
    ax.set_title("confusion matrix")
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)


def plot_roc(points: Dict[str, List[float]], auc: Optional[float], path: str) -> None:
    """The ROC curve of a binary classifier, with the chance diagonal."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    label = "ROC" if auc is None else f"ROC (AUC {auc:.4f})"
    ax.plot(points["fpr"], points["tpr"], "-", label=label)
    ax.plot([0, 1], [0, 1], ":", color="grey", label="chance")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)
