"""Ranks and advantage ratios of routing policies over a grid's cells (``compare --routers``).

A *cell* is one (workload, order, load); its rows are :func:`~kvroute.sim.grid_results.
aggregate`'s means over seeds, one per routing policy. For each cell, policies are ranked
by mean E2E (1 = lowest). For each policy ``p`` and metric ``m`` (mean E2E, mean TTFT,
p99 TTFT) the *advantage* in a cell is ``best other / m(p)``, where "best other" is the
lowest ``m`` among the other policies that read no simulator probes (so > 1: ``p`` beats
every other product policy; < 1: one of them beats ``p``). A policy's score is the
geometric mean of its advantages over the cells.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Collection, Sequence
from typing import Any

from kvroute.sim.grid_results import fmt

__all__ = ["ADVANTAGE_METRICS", "advantages", "cell_key", "routing_markdown"]

ADVANTAGE_METRICS = ("e2e_mean", "ttft_mean", "ttft_p99")


def cell_key(row: dict[str, Any]) -> tuple[str, str, float | None]:
    return (row["workload"], row["order"], row.get("load"))


def _cell_name(key: tuple[str, str, float | None]) -> str:
    wl, order, load = key
    return wl + (f"/{order}" if order else "") + (f" @{load:g}" if load is not None else "")


def advantages(rows: Sequence[dict[str, Any]], references: Collection[str] = ()
               ) -> tuple[dict[tuple[Any, ...], dict[str, dict[str, float]]],
                          dict[str, dict[str, float]]]:
    """Per cell, per policy: its E2E rank and advantage on each metric; and per policy,
    the geometric means of its advantages. ``references`` (e.g. ``oracle``) are ranked
    but never count as "best other"."""
    cells: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        cells[cell_key(r)].append(r)
    per_cell: dict[tuple[Any, ...], dict[str, dict[str, float]]] = {}
    logs: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for key, members in cells.items():
        out: dict[str, dict[str, float]] = {}
        ranked = sorted(members, key=lambda r: r["e2e_mean"])
        for rank, r in enumerate(ranked, 1):
            out[r["routing"]] = {"rank": float(rank)}
        for metric in ADVANTAGE_METRICS:
            for r in members:
                others = [o[metric] for o in members
                          if o["routing"] != r["routing"] and o["routing"] not in references]
                if not others or r[metric] <= 0:
                    continue
                adv = min(others) / r[metric]
                out[r["routing"]][metric] = adv
                logs[r["routing"]][metric].append(math.log(adv))
        per_cell[key] = out
    geo = {p: {m: math.exp(sum(v) / len(v)) for m, v in ms.items()} for p, ms in logs.items()}
    return per_cell, geo


def routing_markdown(rows: Sequence[dict[str, Any]], references: Collection[str] = ()
                     ) -> str:
    """The geometric-mean table, then each cell's ranks and E2E advantages, as markdown."""
    per_cell, geo = advantages(rows, references)
    policies = sorted(geo, key=lambda p: -geo[p].get("e2e_mean", 0.0))
    lines = ["| routing | geo-mean E2E advantage | mean TTFT | p99 TTFT | mean rank |",
             "|---|---|---|---|---|"]
    for p in policies:
        ranks = [c[p]["rank"] for c in per_cell.values() if p in c]
        lines.append(f"| {p}{' (reference)' if p in references else ''} | "
                     + " | ".join(f"{geo[p].get(m, float('nan')):.3f}x"
                                  for m in ADVANTAGE_METRICS)
                     + f" | {sum(ranks) / len(ranks):.1f} |")
    lines += ["", "Rank by mean E2E in each cell (advantage on mean E2E in brackets):", "",
              "| cell | " + " | ".join(policies) + " |",
              "|---|" + "---|" * len(policies)]
    for key, cell in per_cell.items():
        lines.append(f"| {_cell_name(key)} | " + " | ".join(
            f"{int(cell[p]['rank'])} ({cell[p].get('e2e_mean', float('nan')):.2f})"
            if p in cell else "-" for p in policies) + " |")
    lines += ["", "Mean E2E (s) in each cell:", "",
              "| cell | " + " | ".join(policies) + " |",
              "|---|" + "---|" * len(policies)]
    by = {(cell_key(r), r["routing"]): r for r in rows}
    for key in per_cell:
        lines.append(f"| {_cell_name(key)} | " + " | ".join(
            fmt(by[(key, p)]["e2e_mean"], "e2e_mean") if (key, p) in by else "-"
            for p in policies) + " |")
    return "\n".join(lines)
