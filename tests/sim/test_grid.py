"""A small version of the paper's grid, pinned: any change in a policy's behaviour (or in
the simulator) moves these numbers and fails here. If a change is intended, rerun
``python tests/sim/test_grid.py`` to print the new values, and say why in the commit."""

from __future__ import annotations

import pytest

from kvroute.sim.cluster import SimConfig
from kvroute.sim.grid import Grid, run_grid
from kvroute.sim.grid_results import aggregate

GRID = Grid(
    workloads=("gsp", "sharegpt", "loogle"), orders=("random", "grouped"),
    evictions=("lru", "rlt"), routings=("round_robin", "cache_aware", "lbgr"), seeds=(1,),
    sim=SimConfig(workers=4, capacity=30_000),
    workload_options={"gsp": {"groups": 20, "prompts_per_group": 8, "rate": 12.0},
                      "sharegpt": {"clients": 16},
                      "loogle": {"documents": 12, "questions_per_doc": 8}})

# (workload, order, eviction, routing) -> (hit rate, mean E2E s)
PINNED: dict[tuple[str, str, str, str], tuple[float, float]] = {
    ('gsp', 'random', 'lru', 'round_robin'): (0.165923, 4.790777),
    ('gsp', 'random', 'lru', 'cache_aware'): (0.411546, 3.060128),
    ('gsp', 'random', 'lru', 'lbgr'): (0.275863, 3.430913),
    ('gsp', 'random', 'rlt', 'round_robin'): (0.201568, 4.457488),
    ('gsp', 'random', 'rlt', 'cache_aware'): (0.412409, 2.958904),
    ('gsp', 'random', 'rlt', 'lbgr'): (0.305260, 3.283190),
    ('gsp', 'grouped', 'lru', 'round_robin'): (0.143208, 4.108829),
    ('gsp', 'grouped', 'lru', 'cache_aware'): (0.436766, 2.096231),
    ('gsp', 'grouped', 'lru', 'lbgr'): (0.145230, 4.238926),
    ('gsp', 'grouped', 'rlt', 'round_robin'): (0.143208, 4.108829),
    ('gsp', 'grouped', 'rlt', 'cache_aware'): (0.436766, 2.096231),
    ('gsp', 'grouped', 'rlt', 'lbgr'): (0.145230, 4.238926),
    ('sharegpt', '', 'lru', 'round_robin'): (0.365176, 1.075637),
    ('sharegpt', '', 'lru', 'cache_aware'): (0.672375, 0.608568),
    ('sharegpt', '', 'lru', 'lbgr'): (0.658091, 0.653633),
    ('sharegpt', '', 'rlt', 'round_robin'): (0.362286, 1.075850),
    ('sharegpt', '', 'rlt', 'cache_aware'): (0.672375, 0.608568),
    ('sharegpt', '', 'rlt', 'lbgr'): (0.658057, 0.653676),
    ('loogle', '', 'lru', 'round_robin'): (0.335829, 2.468640),
    ('loogle', '', 'lru', 'cache_aware'): (0.772608, 0.641167),
    ('loogle', '', 'lru', 'lbgr'): (0.764344, 0.608381),
    ('loogle', '', 'rlt', 'round_robin'): (0.369689, 2.480015),
    ('loogle', '', 'rlt', 'cache_aware'): (0.772608, 0.641167),
    ('loogle', '', 'rlt', 'lbgr'): (0.764344, 0.608381),
}


def rows() -> list[dict]:
    runs, ceilings = run_grid(GRID, jobs=1)
    return aggregate(runs, ceilings, baseline=("lru", "cache_aware"))


@pytest.fixture(scope="module")
def grid_rows() -> list[dict]:
    return rows()


def test_small_paper_grid_is_pinned(grid_rows: list[dict]) -> None:
    """Hit rate and mean E2E of every cell equal the pinned values (same code, same seed)."""
    got = {(r["workload"], r["order"], r["eviction"], r["routing"]):
           (r["hit_rate"], r["e2e_mean"]) for r in grid_rows}
    assert set(got) == set(PINNED)
    for key, (hit, e2e) in PINNED.items():
        assert got[key][0] == pytest.approx(hit, abs=1e-6), key
        assert got[key][1] == pytest.approx(e2e, rel=1e-6), key


def test_small_grid_respects_ceilings_and_baseline(grid_rows: list[dict]) -> None:
    """No cell beats its ceilings; the baseline cell's ratios are exactly 1."""
    for r in grid_rows:
        assert r["hit_rate"] <= r["ceiling_infinite"] + 1e-9
        if (r["eviction"], r["routing"]) == ("lru", "cache_aware"):
            assert r["x_hit"] == r["x_e2e"] == 1.0


if __name__ == "__main__":
    for r in rows():
        key = (r["workload"], r["order"], r["eviction"], r["routing"])
        print(f"    {key!r}: ({r['hit_rate']:.6f}, {r['e2e_mean']:.6f}),")


def test_an_interrupt_keeps_the_finished_runs() -> None:
    """Ctrl-C during a grid: GridInterrupted carries the runs that finished, in grid order."""
    from kvroute.sim.grid import GridInterrupted

    small = Grid(workloads=("gsp",), evictions=("lru",), routings=("round_robin", "lbgr"),
                 seeds=(1, 2), sim=SimConfig(workers=2, capacity=30_000),
                 workload_options={"gsp": {"groups": 2, "prompts_per_group": 2}})

    def progress(done: int, total: int) -> None:
        if done == 3:  # two ceilings tasks (one per seed) and one run
            raise KeyboardInterrupt

    with pytest.raises(GridInterrupted) as stop:
        run_grid(small, jobs=1, progress=progress)
    assert stop.value.total == 4
    assert [r["cell"] for r in stop.value.runs] == [next(small.cells())]
    assert len(stop.value.ceilings) == 2
    assert "interrupted after 1 of 4 runs" in str(stop.value)
