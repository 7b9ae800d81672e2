"""Hit rate against capacity for a one-cache replay (``kvroute cache --plot``).

Needs matplotlib (``pip install 'kvroute[plot]'``): check with :func:`load_pyplot` before
the work, as the command line does.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kvroute.sim.plot import figure_path, load_pyplot

__all__ = ["load_pyplot", "plot_hit_rates"]


def plot_hit_rates(grid: Sequence[dict[str, Any]], path: str | Path, title: str = "",
                   unit: str = "tokens") -> Path:
    """One line per policy and per ceiling, capacity on a log x axis; returns the path."""
    plt = load_pyplot()
    caps = [g["capacity"] for g in grid]
    fig, ax = plt.subplots(figsize=(8, 5))
    names = [r["policy"] for r in grid[0]["policies"]] if grid else []
    for name in names:
        rates = [next(r["hit_rate"] for r in g["policies"] if r["policy"] == name)
                 for g in grid]
        ax.plot(caps, rates, marker="o", label=name)
    for key, style in (("optimal", "--"), ("infinite", ":")):
        ax.plot(caps, [g["ceilings"][key] for g in grid], "k" + style, label=f"{key} (ceiling)")
    if len(caps) > 1 and min(caps) > 0:
        ax.set_xscale("log")
    ax.set_xlabel(f"cache capacity ({unit})")
    ax.set_ylabel("hit rate")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = figure_path(path)
    fig.savefig(out)
    plt.close(fig)
    return out
