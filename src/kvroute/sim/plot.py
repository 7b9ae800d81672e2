"""One figure for a set of simulator runs: hit rate against its ceilings, latency CDFs, load.

Needs matplotlib (``pip install 'kvroute[plot]'``); it is imported only here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kvroute.errors import KvrouteError
from kvroute.sim.cluster import SimResult

__all__ = ["figure_path", "load_pyplot", "plot_runs"]


def load_pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise KvrouteError("plots need matplotlib: pip install 'kvroute[plot]'") from None
    return plt


def figure_path(path: str | Path) -> Path:
    """Where a figure asked for at ``path`` is written: ``path``, with ``.png`` added when
    it has no suffix (what matplotlib would write, so the path printed is the file's)."""
    out = Path(path)
    return out if out.suffix else out.with_name(out.name + ".png")


def _label(r: SimResult) -> str:
    return f"{r.config.eviction}+{r.config.routing}"


def plot_runs(results: Sequence[SimResult], path: str | Path, title: str = "") -> Path:
    """Write a 2x2 figure (PNG, SVG or PDF by suffix) and return its path."""
    plt = load_pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    labels = [_label(r) for r in results]
    ax = axes[0, 0]
    hits = [r.records.hit_rate() for r in results]
    bars = ax.bar(labels, hits, color="tab:blue")
    ax.bar_label(bars, fmt="%.3f")
    ceil = results[0].ceilings if results else None
    if ceil is not None:
        ax.axhline(ceil.infinite, color="black", ls="--", lw=1,
                   label=f"infinite cache {ceil.infinite:.3f}")
        ax.axhline(ceil.optimal, color="tab:red", ls=":", lw=1.5,
                   label=f"pooled optimum ({ceil.workers} x {ceil.capacity:,}) {ceil.optimal:.3f}")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_ylabel("cluster token hit rate")
    ax.set_ylim(0, 1)
    ax.set_title("hit rate (ceilings ignore concurrency: real systems sit below)")
    ax.tick_params(axis="x", rotation=20)
    for ax, attr, name in ((axes[0, 1], "e2e", "end-to-end latency"),
                           (axes[1, 0], "ttft", "time to first token")):
        for r, label in zip(results, labels, strict=True):
            x = np.sort(getattr(r.records, attr))
            ax.plot(x, np.arange(1, len(x) + 1) / max(len(x), 1), label=label)
        ax.set_xscale("log")
        ax.set_xlabel(f"{name} (s, log scale)")
        ax.set_ylabel("fraction of requests")
        ax.set_title(f"{name} CDF")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    ax = axes[1, 1]
    if results:
        r = results[0]
        for w in range(r.config.workers):
            rows = r.load[r.load[:, 1] == w]
            ax.plot(rows[:, 0], rows[:, 2] + rows[:, 3], lw=0.8, label=f"worker {w}")
        ax.set_title(f"requests on each worker over time ({labels[0]})")
        ax.set_xlabel("simulated time (s)")
        ax.set_ylabel("waiting + running")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = figure_path(path)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
