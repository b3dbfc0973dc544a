"""The training-curves PNG: loss and metrics per epoch, train and val, drawn headless."""
from __future__ import annotations

from typing import Any, Dict, List


def plot_curves(history: List[Dict[str, Any]], path: str, *, title: str = "") -> None:
    """One panel per metric, train and val lines, the exported epoch marked if given."""
    import matplotlib
    matplotlib.use("Agg")  # headless: no display on servers and CI
    import matplotlib.pyplot as plt

    names = list(history[0]["train"]) if history else []
    epochs = [h["epoch"] for h in history]
    cols = max(1, len(names))
    fig, axes = plt.subplots(1, cols, figsize=(4.2 * cols, 3.4), squeeze=False)
    for ax, name in zip(axes[0], names):
        for split, style in (("train", "-"), ("val", "--")):
            values = [h[split].get(name, float("nan")) for h in history]
            ax.plot(epochs, values, style, marker="o", markersize=3, label=split)
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
