"""``learned``'s rank on a small grid (GSP with 16 groups in random order and LooGLE with 16
documents, load 0.9, seed 1): within 2% of the best mean E2E, ahead of lbgr and
cache_aware_v2. Measured when last re-measured (issue 12's learned, hit realisation by
age and scarcity from the oldest prefixes): gsp learned 0.502 s, dynamo 0.536, lbgr
0.547, cache_aware_v2 1.20; loogle learned 0.140, lbgr 0.141, dynamo 0.152,
cache_aware_v2 0.157. With the workers' cached-token reports withheld (``learned`` then
infers them from TTFTs; 2026-12-05): gsp 0.488 s, loogle 0.140."""

from __future__ import annotations

import pytest

from kvroute.sim.cluster import SimConfig
from kvroute.sim.grid import Grid, run_grid
from kvroute.sim.grid_results import aggregate


@pytest.mark.parametrize("report_cached", [True, False])
def test_learned_ranks_first_or_within_two_percent(report_cached: bool) -> None:
    grid = Grid(workloads=("gsp", "loogle"), orders=("random",), evictions=("rlt",),
                routings=("learned", "dynamo", "lbgr", "cache_aware_v2"), seeds=(1,),
                loads=(0.9,), workload_options={"gsp": {"groups": 16},
                                                "loogle": {"documents": 16}},
                sim=SimConfig(report_cached=report_cached))
    runs, _ = run_grid(grid, jobs=1, ceilings=False)
    rows = aggregate(runs, {})
    for wl in ("gsp", "loogle"):
        e2e = {r["routing"]: r["e2e_mean"] for r in rows if r["workload"] == wl}
        assert e2e["learned"] <= 1.02 * min(e2e.values()), (wl, e2e)
        assert e2e["learned"] < min(e2e["lbgr"], e2e["cache_aware_v2"]), (wl, e2e)


def test_at_low_load_new_prompts_spread_over_the_caches() -> None:
    """LooGLE, 64 documents of 8 questions, a KV pool of 80,000 units a worker (the
    documents fit in four caches, not in two), load 0.02: every worker is idle when a
    request comes, and every prompt begins with the same template. Without the balance
    term ``learned`` sent every new document after the template to the first workers and
    their caches overflowed (hit rate 0.63, mean E2E 0.295 s against cache_aware_v2's
    0.862 and 0.163 s, seed 1); with it, the same as cache_aware_v2."""
    def e2e(routings: tuple[str, ...], **args: float) -> dict[str, float]:
        grid = Grid(workloads=("loogle",), evictions=("rlt",), routings=routings,
                    seeds=(1,), loads=(0.02,),
                    workload_options={"loogle": {"documents": 64, "questions_per_doc": 8}},
                    sim=SimConfig(capacity=80_000), routing_args={"learned": args})
        runs, _ = run_grid(grid, jobs=1, ceilings=False)
        return {r["routing"]: r["e2e_mean"] for r in aggregate(runs, {})}

    both = e2e(("learned", "cache_aware_v2"))
    assert both["learned"] <= 1.02 * both["cache_aware_v2"], both
    without = e2e(("learned",), balance_weight=0.0)["learned"]
    assert without > 1.3 * both["cache_aware_v2"], (without, both)
