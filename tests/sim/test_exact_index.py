"""The simulator's exact index: the workers' own cache events, delivered late or at once,
are what every index-reading policy sees; the approximate runs are untouched."""

from __future__ import annotations

import pytest

pytest.importorskip("msgspec")
pytest.importorskip("zmq")

from kvroute.errors import ConfigError
from kvroute.routing.base import ClusterView, Decision, RouteRequest
from kvroute.routing.registry import ROUTING
from kvroute.sim.cluster import SimConfig, simulate
from kvroute.workloads.gsp import GSPConfig, gsp_workload

SMALL = GSPConfig(groups=12, prompts_per_group=6, lengths=(256, 512, 1024))


def test_exact_runs_differ_from_approx_only_where_the_index_is_read() -> None:
    wl = gsp_workload(SMALL, rate=40.0)
    for routing in ("round_robin", "cache_aware"):
        base = SimConfig(workers=3, capacity=3000, routing=routing)
        approx = simulate(wl, base).summary()
        exact = simulate(wl, SimConfig(workers=3, capacity=3000, routing=routing,
                                       index="exact")).summary()
        if not ROUTING.get(routing).uses_index:
            assert exact["hit_rate"] == approx["hit_rate"]  # nobody reads the index
        again = simulate(wl, SimConfig(workers=3, capacity=3000, routing=routing,
                                       index="exact")).summary()
        assert again["hit_rate"] == exact["hit_rate"]  # deterministic


def test_the_policy_sees_each_workers_true_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """With no delay, at every decision the view's match equals each idle worker's own
    cache, rounded down to whole blocks (the event block size); on a worker with requests
    in flight it is at least that (their prompts count as held)."""
    from kvroute.routing import cache_aware
    from kvroute.sim import cluster

    seen: list[tuple[list[int], list[int], list[int]]] = []
    workers_ref: list[list] = []
    real_sim_worker = cluster.SimWorker

    def capture(*a, **k):
        w = real_sim_worker(*a, **k)
        workers_ref[-1].append(w)
        return w

    route = cache_aware.CacheAware.route

    def spy(self, req: RouteRequest, view: ClusterView) -> Decision:
        matched = view.matched(req).tolist()
        truth = [w.cache.peek(req.units) // 8 * 8 for w in workers_ref[-1]]
        seen.append((matched, truth, view.in_flight().tolist()))
        return route(self, req, view)

    monkeypatch.setattr(cluster, "SimWorker", capture)
    monkeypatch.setattr(cache_aware.CacheAware, "route", spy)
    workers_ref.append([])
    simulate(gsp_workload(SMALL, rate=40.0),
             SimConfig(workers=3, capacity=3000, routing="cache_aware", index="exact",
                       block_size=8))
    assert len(seen) == SMALL.groups * SMALL.prompts_per_group
    idle = [(m[k], t[k]) for m, t, busy in seen for k in range(3) if busy[k] == 0]
    busy = [(m[k], t[k]) for m, t, b in seen for k in range(3) if b[k] > 0]
    assert idle and busy
    assert all(m == t for m, t in idle)
    assert all(m >= t for m, t in busy)
    assert any(t for _, t in idle)


def test_delayed_events_still_run_and_bad_settings_fail() -> None:
    wl = gsp_workload(SMALL, rate=40.0)
    late = simulate(wl, SimConfig(workers=3, capacity=3000, routing="lbgr", index="exact",
                                  event_delay=0.5)).summary()
    assert 0 < late["hit_rate"] < 1
    for bad in ({"index": "magic"}, {"event_delay": -1.0}, {"block_size": 0}):
        with pytest.raises(ConfigError):
            SimConfig(**bad)  # type: ignore[arg-type]


def test_sim_command_runs_both_indexes(tmp_path, capsys) -> None:
    """`kvroute sim --index approx,exact` adds one row per index; a bad name is one line."""
    import json

    from kvroute.cli import main

    out = tmp_path / "s.json"
    rc = main(["sim", "--groups", "6", "--prompts-per-group", "4", "--routing", "lbgr",
               "--index", "approx,exact", "--event-delay", "0.01", "--no-ceilings",
               "--json", str(out)])
    assert rc == 0
    runs = json.loads(out.read_text())["runs"]
    assert [r["config"]["index"] for r in runs] == ["approx", "exact"]
    assert runs[1]["config"]["event_delay"] == 0.01
    capsys.readouterr()
    assert main(["sim", "--index", "perfect"]) == 2
    assert "--index" in capsys.readouterr().err
