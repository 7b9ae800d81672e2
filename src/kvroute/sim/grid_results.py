"""Tables and plots for a grid of runs: means over seeds, ratios to a baseline pair.

Ratios are "times better than the baseline": hit rate cell/base; TTFT and E2E base/cell
(lower is better); throughput as a percentage change. The baseline is the same workload
and order with the baseline (eviction, routing) pair, averaged over the same seeds.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kvroute.errors import ConfigError

__all__ = ["METRICS", "aggregate", "fmt", "markdown_table", "plot_grid", "plot_load_ratios"]

# name -> (how to read it from a summary, higher is better)
METRICS: dict[str, tuple[tuple[str, ...], bool]] = {
    "hit_rate": (("hit_rate",), True),
    "ttft_mean": (("ttft_s", "mean"), False),
    "ttft_p99": (("ttft_s", "p99"), False),
    "e2e_mean": (("e2e_s", "mean"), False),
    "e2e_p99": (("e2e_s", "p99"), False),
    "throughput": (("throughput_rps",), True),
}


def _read(summary: dict[str, Any], path: tuple[str, ...]) -> float:
    value: Any = summary
    for key in path:
        value = value[key]
    return float(value)


def aggregate(runs: Sequence[dict[str, Any]], ceilings: dict[Any, dict[str, float]],
              baseline: tuple[str, str] | None = None) -> list[dict[str, Any]]:
    """One row per (workload, order, load, eviction, routing): metric means over seeds, the mean
    ceilings, and ratios to ``baseline`` = (eviction, routing) when it is in the grid."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        c = run["cell"]
        groups[(c.workload, c.order, c.load, c.eviction, c.routing)].append(run)
    rows = []
    for (wl, order, load, ev, ro), members in groups.items():
        row: dict[str, Any] = {"workload": wl, "order": order or "", "load": load,
                               "eviction": ev, "routing": ro, "seeds": len(members),
                               "source": members[0].get("source", "")}
        for name, (path, _) in METRICS.items():
            row[name] = float(np.mean([_read(m["summary"], path) for m in members]))
        cs = [ceilings[m["cell"].case] for m in members if m["cell"].case in ceilings]
        row["ceiling_infinite"] = float(np.mean([c["infinite"] for c in cs])) if cs else None
        row["ceiling_optimal"] = float(np.mean([c["optimal"] for c in cs])) if cs else None
        rows.append(row)
    if baseline is not None:
        base = {(r["workload"], r["order"], r["load"]): r for r in rows
                if (r["eviction"], r["routing"]) == baseline}
        if not base:
            raise ConfigError(f"baseline {baseline[0]}+{baseline[1]} is not in the grid")
        for r in rows:
            b = base.get((r["workload"], r["order"], r["load"]))
            if b is None:
                continue
            r["x_hit"] = r["hit_rate"] / b["hit_rate"] if b["hit_rate"] else float("inf")
            r["x_ttft"] = b["ttft_mean"] / r["ttft_mean"]
            r["x_e2e"] = b["e2e_mean"] / r["e2e_mean"]
            r["throughput_gain"] = r["throughput"] / b["throughput"] - 1
    return rows


def fmt(value: Any, name: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if name in ("hit_rate", "ceiling_infinite", "ceiling_optimal"):
        return f"{value:.3f}"
    if name.startswith("x_"):
        return f"{value:.2f}x"
    if name == "throughput_gain":
        return f"{value:+.1%}"
    if name == "load":
        return f"{value:g}"
    if name == "throughput":
        return f"{value:.2f}"
    if name.startswith(("ttft", "e2e")):
        return f"{value:.3f}" if value < 10 else f"{value:.1f}"
    return str(value)


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    head = "| " + " | ".join(columns) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(fmt(r.get(c), c) for c in columns) + " |" for r in rows]
    return "\n".join([head, rule, *body])


def _case_label(wl: str, od: str, load: float | None, sep: str = "\n", at: str = "@") -> str:
    """A cell's name: one part per line for an axis (``gsp``, ``random``, ``@0.8``);
    ``gsp_random_load0.8`` with ``sep="_", at="load"`` for a file."""
    return wl + (f"{sep}{od}" if od else "") + (f"{sep}{at}{load:g}" if load is not None else "")


def _legend_outside(ax: Any, n: int) -> None:
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0),
              ncol=1 if n <= 28 else 2, frameon=False)


def plot_grid(rows: Sequence[dict[str, Any]], runs: Sequence[dict[str, Any]],
              out_dir: Path) -> list[Path]:
    """Per metric: bars (one group per workload, order and load) and, for the latency
    metrics, a heatmap of each pair's value relative to the best in its cell (1.00 =
    best); per workload, order and load: the E2E CDF of the first seed."""
    from kvroute.sim.plot import load_pyplot

    plt = load_pyplot()
    import matplotlib

    out_dir.mkdir(parents=True, exist_ok=True)
    cases = list(dict.fromkeys((r["workload"], r["order"], r["load"]) for r in rows))
    pairs = list(dict.fromkeys((r["eviction"], r["routing"]) for r in rows))
    by = {(r["workload"], r["order"], r["load"], r["eviction"], r["routing"]): r for r in rows}
    cmap = matplotlib.colormaps["tab20" if len(pairs) <= 20 else "turbo"]
    colors = [cmap(k / max(len(pairs) - 1, 1)) if len(pairs) > 20 else cmap(k)
              for k in range(len(pairs))]
    names = [f"{ev}+{ro}" for ev, ro in pairs]
    written = []

    def save(fig: Any, name: str) -> None:
        path = out_dir / name
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
        written.append(path)

    width = 0.8 / max(len(pairs), 1)
    for metric, (_, higher) in METRICS.items():
        fig, ax = plt.subplots(figsize=(max(8.0, 0.1 * len(pairs) * len(cases) + 2),
                                        max(4.5, 0.17 * len(pairs))))
        x = np.arange(len(cases))
        for k, (ev, ro) in enumerate(pairs):
            heights = [by.get((*case, ev, ro), {}).get(metric, np.nan) for case in cases]
            ax.bar(x + k * width - 0.4 + width / 2, heights, width, label=names[k],
                   color=colors[k])
        ax.set_xticks(x, [_case_label(*case) for case in cases])
        ax.set_title(f"{metric} ({'higher' if higher else 'lower'} is better; mean over seeds)")
        if metric.startswith(("ttft", "e2e")):
            ax.set_yscale("log")
            ax.set_ylabel("seconds (log)")
        _legend_outside(ax, len(pairs))
        ax.grid(axis="y", alpha=0.3)
        save(fig, f"{metric}.png")
        if higher or len(pairs) < 2:
            continue
        rel = np.full((len(pairs), len(cases)), np.nan)
        for j, case in enumerate(cases):
            vals = np.array([by.get((*case, ev, ro), {}).get(metric, np.nan)
                             for ev, ro in pairs])
            if np.isfinite(vals).any():
                rel[:, j] = vals / np.nanmin(vals)
        fig, ax = plt.subplots(figsize=(max(6.0, 0.75 * len(cases) + 3),
                                        max(3.0, 0.32 * len(pairs) + 1.5)))
        order = np.argsort([np.nanmean(np.log(r)) if np.isfinite(r).any() else np.inf
                            for r in rel], kind="stable")  # best overall on top
        rel = rel[order]
        im = ax.imshow(np.minimum(rel, 3.0), cmap="RdYlGn_r", vmin=1.0, vmax=3.0, aspect="auto")
        for i in range(len(pairs)):
            for j in range(len(cases)):
                if np.isfinite(rel[i, j]):
                    ax.text(j, i, f"{rel[i, j]:.2f}", ha="center", va="center", fontsize=6)
        ax.set_xticks(np.arange(len(cases)), [_case_label(*c) for c in cases], fontsize=7)
        ax.set_yticks(np.arange(len(pairs)), [names[k] for k in order], fontsize=7)
        ax.set_title(f"{metric}: each pair's value over the best in its column "
                     "(1.00 = best; colour capped at 3)")
        fig.colorbar(im, ax=ax, fraction=0.03)
        save(fig, f"relative_{metric}.png")
    first_seed = min((r["cell"].seed for r in runs), default=None)
    for wl, od, load in cases if runs else []:
        fig, ax = plt.subplots(figsize=(7, max(4.5, 0.17 * len(pairs))))
        for run in runs:
            c = run["cell"]
            if (c.workload, c.order or "", c.load, c.seed) == (wl, od, load, first_seed):
                e2e = run["e2e"]
                k = pairs.index((c.eviction, c.routing))
                ax.plot(e2e, np.arange(1, len(e2e) + 1) / len(e2e), label=names[k],
                        color=colors[k])
        ax.set_xscale("log")
        ax.set_xlabel("end-to-end latency (s, log)")
        ax.set_ylabel("fraction of requests")
        ax.set_title(f"E2E CDF: {_case_label(wl, od, load, ' ')} (seed {first_seed})")
        ax.grid(alpha=0.3)
        _legend_outside(ax, len(pairs))
        save(fig, f"cdf_{_case_label(wl, od, load, '_', 'load')}.png")
    return written


def plot_load_ratios(rows: Sequence[dict[str, Any]], focus: tuple[str, str],
                     out_dir: Path) -> list[Path]:
    """Per (workload, order): the focus pair's TTFT and E2E ratios to the baseline (the
    rows' ``x_ttft``, ``x_e2e``) against the offered load."""
    from kvroute.sim.plot import load_pyplot

    plt = load_pyplot()
    mine = [r for r in rows if (r["eviction"], r["routing"]) == focus
            and r.get("load") is not None and "x_e2e" in r]
    written = []
    for wl, od in dict.fromkeys((r["workload"], r["order"]) for r in mine):
        pts = sorted((r["load"], r["x_ttft"], r["x_e2e"]) for r in mine
                     if (r["workload"], r["order"]) == (wl, od))
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label="TTFT ratio (mean)")
        ax.plot([p[0] for p in pts], [p[2] for p in pts], "s-", label="E2E ratio (mean)")
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.set_xlabel("offered load (fraction of capacity without cache hits)")
        ax.set_ylabel("times better than the baseline")
        ax.set_title(f"{focus[0]}+{focus[1]}: {wl}{' ' + od if od else ''}")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = out_dir / f"load_ratios_{wl}{'_' + od if od else ''}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written
