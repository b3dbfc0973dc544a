"""The training-curves PNG: loss and metrics per epoch, train and val, drawn headless."""
from __future__ import annotations

from typing import Any, Dict, List

from ..files import write_atomic


def plot_curves(history: List[Dict[str, Any]], path: str, *, title: str = "") -> None:
    """One panel per metric, train and val lines, the exported epoch marked if given."""
    import matplotlib  # lazy: matplotlib is only needed to draw
    matplotlib.use("Agg")  # headless: no display on servers and CI
    import matplotlib.pyplot as plt  # lazy: after matplotlib.use, as pyplot requires

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
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)
