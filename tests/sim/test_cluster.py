"""The cluster simulator: determinism, accounting, queueing laws, closed loops."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from kvroute.errors import ConfigError
from kvroute.routing import decode_first
from kvroute.routing.router import Router
from kvroute.sim.cluster import SimConfig, simulate
from kvroute.sim.step_model import StepModel
from kvroute.workloads.gsp import GSPConfig, gsp_workload
from kvroute.workloads.request import ClosedLoop, OpenLoop, Request

LINEAR = StepModel(name="linear", t_w_ms=0.0, t0_ms=2.0, b_ms=0.1, c_ms=0.0, g_ms=0.0,
                   kv_pool_tokens=100_000)
SMALL_GSP = GSPConfig(groups=16, prompts_per_group=8, lengths=(256, 512, 1024))


def test_same_seed_same_result_bit_for_bit() -> None:
    """Two runs with the same inputs and seed give identical per-request records."""
    wl = gsp_workload(SMALL_GSP, rate=40.0)
    cfg = SimConfig(eviction="rlt", routing="random", model=LINEAR, seed=3)
    a, b = simulate(wl, cfg), simulate(wl, cfg)
    for name, col in a.records.columns.items():
        assert np.array_equal(col, b.records[name]), name
    c = simulate(wl, SimConfig(eviction="rlt", routing="random", model=LINEAR, seed=4))
    assert not np.array_equal(a.records["worker"], c.records["worker"])


def test_accounting_and_work_conservation() -> None:
    """Every request finishes once; prefill work = uncached prompt tokens; decode = output-1."""
    wl = gsp_workload(SMALL_GSP, rate=60.0, output_len=5)
    res = simulate(wl, SimConfig(model=LINEAR, debug=True))
    rec = res.records
    assert len(rec) == wl.size == 128
    assert sorted(rec["rid"].astype(int)) == list(range(128))
    prefill = sum(w["prefill_tokens"] for w in res.worker_stats)
    decode = sum(w["decode_tokens"] for w in res.worker_stats)
    assert prefill == rec["prompt"].sum() - rec["cached"].sum()
    assert decode == (rec["output"] - 1).sum()
    assert (rec["arrival"] <= rec["start"]).all() and (rec["start"] < rec["first_token"]).all()
    assert (rec["first_token"] < rec["finish"]).all()
    for w in res.worker_stats:
        assert 0 < w["busy_s"] <= res.sim_time
    assert rec["cached"].sum() > 0  # groups share prefixes


def test_littles_law() -> None:
    """Mean requests in system seen at arrivals (PASTA) = arrival rate x mean time in system."""
    cfg = GSPConfig(groups=64, prompts_per_group=40, lengths=(512, 1024, 2048), prefix_ratio=0)
    rate = 0.75 * 4 / (LINEAR.t0_ms / 1000 + LINEAR.b_ms / 1000 * 1190)  # ~75% utilisation
    res = simulate(gsp_workload(cfg, rate=rate, output_len=1), SimConfig(model=LINEAR))
    arrivals = np.sort(res.records["arrival"])
    lam = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0])
    seen = res.in_system[len(res.in_system) // 10:].mean()  # skip the warm-up
    assert seen == pytest.approx(lam * res.records.e2e.mean(), rel=0.12)


def _single_worker_latency(rate: float, n: int = 2000) -> np.ndarray:
    reqs = [Request(rid=i, tokens=np.arange(i * 1000, i * 1000 + 1000), output_len=1)
            for i in range(n)]
    rng = np.random.default_rng(7)
    for r, t in zip(reqs, np.cumsum(rng.exponential(1 / rate, n)), strict=True):
        r.arrival = float(t)
    res = simulate(OpenLoop.of("fixed", reqs), SimConfig(workers=1, model=LINEAR,
                                                         chunk_size=1000))
    order = np.argsort(res.records["rid"])
    return res.records.e2e[order]


def test_low_load_latency_is_service_time_and_queueing_has_a_knee() -> None:
    """1000-token prompts, 102 ms each: light load ~ service time; near capacity it blows up;
    above capacity the wait grows without bound (later requests wait longer)."""
    service = (LINEAR.t0_ms + LINEAR.b_ms * 1000) / 1000
    light = _single_worker_latency(0.05 / service)
    assert light.min() == pytest.approx(service)  # an empty system: exactly the service time
    assert light.mean() == pytest.approx(service * (1 + 0.05 / (2 * 0.95)), rel=0.02)  # M/D/1
    means = [_single_worker_latency(u / service).mean() for u in (0.3, 0.6, 0.9)]
    assert means[0] < means[1] < means[2]
    assert means[2] > 3 * means[0]
    over = _single_worker_latency(1.2 / service)
    assert over[-200:].mean() > 3 * over[200:400].mean()


def test_closed_loop_keeps_concurrency_and_turn_order() -> None:
    """A closed loop never has more than `concurrency` requests out; turns are sequential."""
    sessions = []
    rid = 0
    for s in range(6):
        base = np.arange(s * 10_000, s * 10_000 + 300)
        turns = []
        for k in range(3):
            turns.append(Request(rid=rid, tokens=base[: 100 * (k + 1)], output_len=2,
                                 session=s, turn=k))
            rid += 1
        sessions.append(turns)
    res = simulate(ClosedLoop("chat", sessions, concurrency=2), SimConfig(model=LINEAR),
                   ceilings=True)
    rec = res.records
    assert len(rec) == 18
    assert res.in_system.max() <= 1  # the arriving request sees at most the other client
    by_rid = {int(r): k for k, r in enumerate(rec["rid"])}
    for turns in sessions:
        for prev, nxt in itertools.pairwise(turns):
            assert rec["arrival"][by_rid[nxt.rid]] >= rec["finish"][by_rid[prev.rid]]
    assert rec["cached"].sum() > 0
    assert res.ceilings is not None and res.records.hit_rate() <= res.ceilings.infinite + 1e-9


def test_router_accounting_drains() -> None:
    """After a run the router counts nothing in flight and every request was routed once."""
    from kvroute.routing import Router, make_router_policy

    wl = gsp_workload(SMALL_GSP, rate=100.0)
    res = simulate(wl, SimConfig(routing="round_robin", model=LINEAR))
    counts = np.bincount(res.records["worker"].astype(int), minlength=4)
    assert counts.tolist() == [32, 32, 32, 32]
    router = Router(make_router_policy("round_robin"), 2)
    from kvroute.routing import RouteRequest

    d = router.route(RouteRequest(np.arange(5)), 0.0)
    router.complete(d, 1.0)
    router.complete(d, 2.0)  # a second close is ignored
    assert router.workers[0].in_flight == 0 and router.workers[0].completed == 1


def test_bad_inputs_are_clear_errors() -> None:
    """Unknown policies, duplicate ids and oversize prompts are ConfigErrors, not crashes."""
    with pytest.raises(ConfigError, match="choose from"):
        SimConfig(routing="nope")
    with pytest.raises(ConfigError, match="choose from"):
        SimConfig(eviction="nope")
    twice = [Request(rid=1, tokens=np.arange(10), output_len=1, arrival=0.0),
             Request(rid=1, tokens=np.arange(10), output_len=1, arrival=0.0)]
    with pytest.raises(ConfigError, match="twice"):
        simulate(OpenLoop.of("dup", twice), SimConfig(model=LINEAR))
    huge = [Request(rid=0, tokens=np.arange(200_000), output_len=1)]
    with pytest.raises(ConfigError, match="pool"):
        simulate(OpenLoop.of("huge", huge), SimConfig(model=LINEAR))


def test_workers_of_different_speeds() -> None:
    """``speeds``: a worker at half speed takes twice the time for the same steps (one
    request at a time: the same batches at either speed)."""
    wl = gsp_workload(SMALL_GSP, rate=0.01, output_len=3)
    fast = simulate(wl, SimConfig(workers=1, model=LINEAR, speeds=(1.0,)))
    slow = simulate(wl, SimConfig(workers=1, model=LINEAR, speeds=(0.5,)))
    assert slow.worker_stats[0]["busy_s"] == pytest.approx(2 * fast.worker_stats[0]["busy_s"])
    mixed = simulate(wl, SimConfig(workers=2, model=LINEAR, routing="round_robin",
                                   speeds=(1.0, 0.5)))
    per_token = [w["busy_s"] / (w["prefill_tokens"] + w["decode_tokens"])
                 for w in mixed.worker_stats]
    assert per_token[1] > 1.5 * per_token[0]
    assert SimConfig(workers=2, model=LINEAR, speeds=(1.0, 0.5)).speed_sum == 1.5
    assert SimConfig(workers=3, model=LINEAR).speed_sum == 3.0
    with pytest.raises(ConfigError, match="one speed per worker"):
        SimConfig(workers=2, model=LINEAR, speeds=(1.0,))
    with pytest.raises(ConfigError, match="speed must be a finite number > 0"):
        SimConfig(workers=2, model=LINEAR, speeds=(1.0, 0.0))


def test_max_tokens_exact_none_or_a_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    """``max_tokens``: "exact" tells the router each request's output length, "none"
    tells it nothing, "N" a cap of N (raised to an output above it); the workers generate
    the same outputs every way."""
    from kvroute.routing import Router

    told: list[int | None] = []
    route = Router.route

    def spy(self: Router, req, now, allowed=None):  # type: ignore[no-untyped-def]
        told.append(req.max_tokens)
        return route(self, req, now, allowed)

    monkeypatch.setattr(Router, "route", spy)
    wl = gsp_workload(SMALL_GSP, rate=40.0, output_len=5)
    exact = simulate(wl, SimConfig(model=LINEAR, routing="learned"))
    assert told == [5] * wl.size
    told.clear()
    none = simulate(wl, SimConfig(model=LINEAR, routing="learned", max_tokens="none"))
    assert told == [None] * wl.size
    assert (none.records["output"] == exact.records["output"]).all()
    told.clear()
    capped = simulate(wl, SimConfig(model=LINEAR, routing="learned", max_tokens="64"))
    assert told == [64] * wl.size
    assert (capped.records["output"] == exact.records["output"]).all()
    told.clear()
    simulate(wl, SimConfig(model=LINEAR, routing="learned", max_tokens="3"))
    assert told == [5] * wl.size  # a cap below the output is raised to it
    for bad in ("cap", "0", "-2", "1.5", "²"):
        with pytest.raises(ConfigError, match="max_tokens must be exact, none or a cap"):
            SimConfig(model=LINEAR, max_tokens=bad)


def test_report_cached_off_withholds_the_cached_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    """``report_cached=False``: completions reach the router without cached tokens; the
    workers cache (and the records count) exactly as with reports."""
    from kvroute.routing import Router

    reported: list[int | None] = []
    complete = Router.complete

    def spy(self: Router, d, now, **kw):  # type: ignore[no-untyped-def]
        reported.append(kw.get("cached_tokens"))
        return complete(self, d, now, **kw)

    monkeypatch.setattr(Router, "complete", spy)
    wl = gsp_workload(SMALL_GSP, rate=40.0)
    on = simulate(wl, SimConfig(model=LINEAR, routing="round_robin"))
    assert len(reported) == wl.size and sum(c or 0 for c in reported) > 0
    reported.clear()
    off = simulate(wl, SimConfig(model=LINEAR, routing="round_robin", report_cached=False))
    assert reported == [None] * wl.size
    assert (off.records["cached"] == on.records["cached"]).all()


def test_stream_share_the_router_sees_completions_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """``stream_share=0``: no first token reaches the router, completions carry no TTFT
    (a request counts as prefilling until it completes); the workers run as streamed.
    Between 0 and 1, that share of the requests (seeded) stream."""
    from kvroute.routing import Router

    firsts: list[float] = []
    ttfts: list[float | None] = []
    first_token, complete = Router.first_token, Router.complete

    def spy_first(self: Router, d, now):  # type: ignore[no-untyped-def]
        firsts.append(now)
        first_token(self, d, now)

    def spy_complete(self: Router, d, now, **kw):  # type: ignore[no-untyped-def]
        ttfts.append(kw.get("ttft_s"))
        return complete(self, d, now, **kw)

    monkeypatch.setattr(Router, "first_token", spy_first)
    monkeypatch.setattr(Router, "complete", spy_complete)
    wl = gsp_workload(SMALL_GSP, rate=40.0)
    on = simulate(wl, SimConfig(model=LINEAR, routing="round_robin"))
    assert len(firsts) == wl.size and None not in ttfts
    firsts.clear()
    ttfts.clear()
    off = simulate(wl, SimConfig(model=LINEAR, routing="round_robin", stream_share=0.0))
    assert firsts == [] and ttfts == [None] * wl.size
    assert (off.records["first_token"] == on.records["first_token"]).all()
    ttfts.clear()
    simulate(wl, SimConfig(model=LINEAR, routing="round_robin", stream_share=0.5))
    assert len(firsts) == wl.size - ttfts.count(None)
    assert 0.35 * wl.size < len(firsts) < 0.65 * wl.size
    with pytest.raises(ConfigError, match="stream_share must be in"):
        SimConfig(model=LINEAR, stream_share=1.5)


def test_router_replicas_each_count_their_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two replicas of a round-robin router: requests go to them in turn, and each keeps
    its own turn over the workers (0, 0, 1, 1, ...); each hears the completions of the
    requests it routed and nothing else, and every engine report reaches both."""
    from kvroute.routing import Router

    completed: dict[int, int] = {}
    reports: dict[int, int] = {}
    complete, report = Router.complete, Router.report_load

    def spy_complete(self: Router, d, now, **kw):  # type: ignore[no-untyped-def]
        completed[id(self)] = completed.get(id(self), 0) + 1
        return complete(self, d, now, **kw)

    def spy_report(self: Router, worker, **kw):  # type: ignore[no-untyped-def]
        reports[id(self)] = reports.get(id(self), 0) + 1
        report(self, worker, **kw)

    monkeypatch.setattr(Router, "complete", spy_complete)
    monkeypatch.setattr(Router, "report_load", spy_report)
    wl = gsp_workload(SMALL_GSP, rate=40.0)
    res = simulate(wl, SimConfig(model=LINEAR, routing="round_robin", router_replicas=2))
    by_arrival = res.records["worker"][np.argsort(res.records["rid"])].astype(int)
    assert by_arrival[:8].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert sorted(completed.values()) == [64, 64]
    assert len(set(reports.values())) == 1 and len(reports) == 2
    one = simulate(wl, SimConfig(model=LINEAR, routing="round_robin"))
    assert np.array_equal(one.records["worker"][np.argsort(one.records["rid"])][:4], [0, 1, 2, 3])
    with pytest.raises(ConfigError, match="router_replicas"):
        SimConfig(model=LINEAR, router_replicas=0)


def test_an_open_loop_request_waits_for_the_one_it_follows() -> None:
    """``after``: the follower arrives while the request it follows is still decoding; it
    is sent when that one completes, and finds its prompt and output cached."""
    first = Request(rid=0, tokens=np.arange(1000), output_len=50,
                    output_tokens=np.arange(5000, 5050))
    follower = Request(rid=1, tokens=np.concatenate([np.arange(1000), np.arange(5000, 5050),
                                                     np.arange(9000, 9100)]),
                       output_len=2, arrival=0.01, after=0)
    other = Request(rid=2, tokens=np.arange(20000, 20100), output_len=2, arrival=0.02)
    res = simulate(OpenLoop.of("turns", [first, follower, other]),
                   SimConfig(workers=1, model=LINEAR))
    rec = {int(r): i for i, r in enumerate(res.records["rid"])}
    finish, queued = res.records["finish"], res.records["arrival"]
    assert queued[rec[1]] == pytest.approx(finish[rec[0]])  # sent at the reply, not at 0.01
    assert queued[rec[2]] == pytest.approx(0.02)  # the others are not held back
    assert res.records["cached"][rec[1]] == 1050

    # at its user's pace: 3 s after the first was sent, though that one ends sooner
    paced = Request(rid=1, tokens=follower.tokens, output_len=2, arrival=0.01, after=0,
                    pace=3.0)
    res = simulate(OpenLoop.of("paced", [first, paced]), SimConfig(workers=1, model=LINEAR))
    rec = {int(r): i for i, r in enumerate(res.records["rid"])}
    assert res.records["finish"][rec[0]] < 3.0
    assert res.records["arrival"][rec[1]] == pytest.approx(3.0)


def test_adapters_and_their_slots(monkeypatch: pytest.MonkeyPatch) -> None:
    """With --adapters each request is drawn an adapter by its first tokens (a GSP group
    keeps one); every worker runs at most --max-loras of them at once (the debug run
    checks it at every step), which costs latency; the router is told each request's
    adapter and its accounting drains."""
    from kvroute.routing import Router
    from kvroute.workloads.adapters import adapter_for

    routers: list[Router] = []
    monkeypatch.setattr("kvroute.sim.cluster.Router",
                        lambda *a, **k: routers.append(Router(*a, **k)) or routers[-1])
    wl = gsp_workload(SMALL_GSP, rate=60.0, output_len=20)
    free = simulate(wl, SimConfig(model=LINEAR, routing="round_robin", adapters=8, seed=2))
    capped = simulate(wl, SimConfig(model=LINEAR, routing="round_robin", adapters=8,
                                    max_loras=1, seed=2, debug=True))
    assert (capped.records["finish"] - capped.records["arrival"]).mean() \
        > (free.records["finish"] - free.records["arrival"]).mean()
    assert all(w.adapters == {} and w.max_loras == 1 for w in routers[-1].workers)
    names = {adapter_for(r.tokens, 8, 2) for r in wl}
    assert len(names) > 1 and names <= {f"lora{k}" for k in range(8)}
    by_group: dict[int, set[str]] = {}
    for r in wl:
        by_group.setdefault(r.session, set()).add(adapter_for(r.tokens, 8, 2))
    assert all(len(v) == 1 for v in by_group.values())
    with pytest.raises(ConfigError, match="adapters"):
        SimConfig(model=LINEAR, adapters=-1)
    with pytest.raises(ConfigError, match="approximate index"):
        SimConfig(model=LINEAR, adapters=4, index="exact")


def test_requests_held_by_the_policy_wait_in_their_latency(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``learned`` holds requests back (decode_first) at this load: each is routed later,
    in order, and its record's arrival is still when it was sent, so what it waited at the
    router counts in its TTFT and E2E; nothing is lost."""
    held: list[int] = []
    routed_at: dict[int, float] = {}
    real = decode_first.holds

    def counting(policy, req, view):  # type: ignore[no-untyped-def]
        out = real(policy, req, view)
        if out and req.rid not in held:
            held.append(req.rid)
        return out

    monkeypatch.setattr(decode_first, "holds", counting)
    route = Router.route

    def stamped(self, req, now, allowed=None):  # type: ignore[no-untyped-def]
        routed_at[req.rid] = now
        return route(self, req, now, allowed)

    monkeypatch.setattr(Router, "route", stamped)
    wl = gsp_workload(SMALL_GSP, rate=250.0, output_len=4)
    res = simulate(wl, SimConfig(routing="learned", model=LINEAR, workers=2, debug=True))
    rec = res.records
    assert len(rec) == wl.size
    arrival = {r.rid: r.arrival for r in wl}
    assert held, "no request was held at this load"
    waited = [routed_at[rid] - arrival[rid] for rid in held]
    assert min(waited) >= 0 and max(waited) > 0
    for rid, start, first in zip(rec["rid"].astype(int), rec["arrival"], rec["first_token"],
                                 strict=True):
        assert start == pytest.approx(arrival[rid])  # sent, not routed
        assert first >= routed_at[rid]
    order = sorted(held, key=lambda rid: routed_at[rid])
    assert order == sorted(held, key=lambda rid: (arrival[rid], rid))  # first come first served
