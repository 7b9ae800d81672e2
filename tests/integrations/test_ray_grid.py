"""``kvroute compare --ray``: the same grid as Ray tasks equals the local process pool, bit
for bit."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kvroute.cli import main
from kvroute.sim.cluster import SimConfig
from kvroute.sim.grid import Grid, run_grid

ray = pytest.importorskip("ray")
WALL = ("wall_s", "sim_per_wall")  # how long the simulator ran on the machine, not results


def results(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k not in WALL}

from kvroute.integrations.ray_grid import RayExecutor  # noqa: E402

GRID = Grid(workloads=("gsp", "sharegpt"), orders=("random",), evictions=("lru", "rlt"),
            routings=("round_robin", "cache_aware"), seeds=(1,),
            sim=SimConfig(workers=3, capacity=20_000),
            workload_options={"gsp": {"groups": 6, "prompts_per_group": 4},
                              "sharegpt": {"clients": 4}})


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_grid_equals_the_process_pool(local_ray):
    pool_runs, pool_ceils = run_grid(GRID, jobs=2)
    seen: list[int] = []
    ray_runs, ray_ceils = run_grid(GRID, executor=RayExecutor(),
                                   progress=lambda done, total: seen.append(done))
    assert seen == list(range(1, len(pool_runs) + len(pool_ceils) + 1))
    assert ray_ceils == pool_ceils
    assert [r["cell"] for r in ray_runs] == [r["cell"] for r in pool_runs]
    for a, b in zip(ray_runs, pool_runs, strict=True):
        assert set(a["summary"]) == set(b["summary"])
        assert results(a["summary"]) == results(b["summary"]) and a["capacity"] == b["capacity"]
        assert np.array_equal(a["ttft"], b["ttft"]) and np.array_equal(a["e2e"], b["e2e"])
        assert a["ttft"].tobytes() == b["ttft"].tobytes()
    assert ray.is_initialized()  # the executor joined this Ray and left it running


def test_compare_ray_flag_writes_the_same_json(local_ray, tmp_path, capsys):
    flags = ["compare", "--workloads", "gsp", "-o", "gsp.groups=5", "-o",
             "gsp.prompts_per_group=3", "--routings", "round_robin,cache_aware",
             "--evictions", "lru", "--workers", "3", "--no-plot"]
    assert main([*flags, "--jobs", "2", "--out", str(tmp_path / "pool")]) == 0
    assert main([*flags, "--ray", "--out", str(tmp_path / "ray")]) == 0
    assert "on Ray" in capsys.readouterr().out
    pool = json.loads((tmp_path / "pool" / "runs.json").read_text())
    on_ray = json.loads((tmp_path / "ray" / "runs.json").read_text())
    for doc in (pool, on_ray):
        for run in doc["runs"]:
            run["summary"] = results(run["summary"])
    assert on_ray == pool
    assert (tmp_path / "ray" / "table.md").read_text() == \
        (tmp_path / "pool" / "table.md").read_text()
