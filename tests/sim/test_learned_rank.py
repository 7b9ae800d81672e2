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
