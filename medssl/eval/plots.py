"""Figures of the recipe reports: test Dice against the number of labeled volumes.

One drawing for the UMCT and the contrastive reports, so their figures read the same way
(mean ± sample sd over seeds as error bars), written atomically as PNG.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Mapping, Sequence


def dice_vs_labeled(series: Mapping[str, Mapping[int, Sequence[float]]], path: str | Path, log2: bool = False) -> Path:
    """Plot ``{curve label: {N labeled: [Dice per seed]}}`` with sd error bars to ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ticks = sorted({n for row in series.values() for n, v in row.items() if v})
    for label, row in series.items():
        ns = [n for n in sorted(row) if row[n]]
        ax.errorbar(ns, [statistics.mean(row[n]) for n in ns],
                    yerr=[statistics.stdev(row[n]) if len(row[n]) > 1 else 0.0 for n in ns],
                    marker="o", capsize=3, label=label)
    if log2:
        ax.set_xscale("log", base=2)
    ax.set_xticks(ticks, [str(n) for n in ticks])
    ax.set_xlabel("labeled training volumes")
    ax.set_ylabel("test Dice (mean over classes)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
    return path
