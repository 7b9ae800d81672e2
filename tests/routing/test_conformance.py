"""Every registered routing policy, driven through the Router the simulator and the live
router share: decisions in range, feedback exactly once, determinism under a seed."""

from __future__ import annotations

import numpy as np
import pytest

from kvroute.routing import Router, RouteRequest, make_router_policy, routing_names
from kvroute.routing.base import Feedback, RoutingPolicy


class Probe:
    """A stand-in for a simulated worker's exact state (for policies that need probes)."""

    def __init__(self, speed: float) -> None:
        self.speed = speed
        self.load = 0

    def predict_e2e(self, tokens: np.ndarray, output_len: int) -> float:
        return (self.load + len(tokens) + output_len) / self.speed


def counting(policy: RoutingPolicy) -> list[Feedback]:
    """Record every feedback the policy receives (and still let it learn from it)."""
    seen: list[Feedback] = []
    inner = policy.on_complete

    def on_complete(fb: Feedback) -> None:
        seen.append(fb)
        inner(fb)

    policy.on_complete = on_complete  # type: ignore[method-assign]
    return seen


def build(name: str, workers: int, seed: int) -> tuple[Router, list[Probe]]:
    policy = make_router_policy(name, seed=seed)
    probes = [Probe(1.0 + w) for w in range(workers)]
    return Router(policy, workers, probes=probes if policy.needs_probes else None), probes


def workload(seed: int, n: int = 120) -> list[RouteRequest]:
    """Prompts from a few shared prefixes with private suffixes, some empty; every fourth
    request does not stream."""
    rng = np.random.default_rng(seed)
    heads = [rng.integers(0, 1000, size=int(rng.integers(20, 200))) for _ in range(5)]
    out = []
    for k in range(n):
        if rng.random() < 0.05:
            units = np.empty(0, dtype=np.int64)
        else:
            tail = rng.integers(0, 1000, size=int(rng.integers(0, 100)))
            units = np.concatenate([heads[int(rng.integers(len(heads)))], tail]).astype(np.int64)
        out.append(RouteRequest(units, max_tokens=int(rng.integers(1, 64)),
                                streamed=k % 4 != 0))
    return out


def drive(router: Router, probes: list[Probe], seed: int) -> list[int]:
    """Route a workload with completions (ok and failed, some closed twice) out of order,
    engine loads that move, and time that advances; return the chosen workers."""
    rng = np.random.default_rng(seed + 100)
    open_: list = []
    chosen = []
    now = 0.0
    for k, req in enumerate(workload(seed)):
        now += float(rng.exponential(0.05))
        for w in range(len(router.workers)):
            router.report_load(w, running=int(rng.integers(0, 8)),
                               waiting=int(rng.integers(0, 4)), kv_usage=float(rng.random()),
                               kv_capacity=100_000)
        d = router.route(req, now)
        chosen.append(d.worker)
        probes[d.worker].load += len(req)
        open_.append(d)
        if k % 3 == 0:
            router.first_token(d, now + 0.01)
        while open_ and rng.random() < 0.6:
            done = open_.pop(int(rng.integers(len(open_))))
            now += 0.001
            ok = bool(rng.random() < 0.9)
            router.complete(done, now, ok=ok)
            router.complete(done, now + 1.0, ok=True)  # a second close is ignored
            probes[done.worker].load -= len(done.req)
    for d in open_:
        router.complete(d, now + 1.0, ok=True)
    return chosen


@pytest.mark.parametrize("name", routing_names())
@pytest.mark.parametrize("workers", [1, 3])
def test_decisions_in_range_and_feedback_exactly_once(name: str, workers: int) -> None:
    """Every decision names a worker of the router; every routed request reaches the
    policy's on_complete once, with its own worker and id; the router's counts balance."""
    router, probes = build(name, workers, seed=7)
    seen = counting(router.policy)
    chosen = drive(router, probes, seed=7)
    assert all(0 <= w < workers for w in chosen)
    assert len(seen) == len(chosen)
    assert sorted(fb.rid for fb in seen) == list(range(len(chosen)))
    by_rid = {fb.rid: fb.worker for fb in seen}
    assert [by_rid[k] for k in range(len(chosen))] == chosen
    assert all(s.in_flight == 0 and s.prefill_units == 0 and s.decode_units == 0
               and s.unstreamed_units == 0 for s in router.workers)
    assert sum(s.completed + s.errors for s in router.workers) == len(chosen)


@pytest.mark.parametrize("name", routing_names())
def test_same_seed_same_decisions(name: str) -> None:
    """Two routers built with the same seed make the same decisions on the same inputs."""
    runs = [drive(*build(name, 4, seed=3), seed=11) for _ in range(2)]
    assert runs[0] == runs[1]


@pytest.mark.parametrize("name", routing_names())
def test_capabilities_are_declared(name: str) -> None:
    """Capabilities are booleans on the class, and a policy that needs something it is not
    given says so instead of failing later."""
    cls = type(make_router_policy(name))
    for attr in ("uses_index", "needs_probes", "takes_seed"):
        assert isinstance(getattr(cls, attr), bool)
    if cls.needs_probes:
        assert cls.describe_needs


@pytest.mark.parametrize("name", routing_names())
def test_workers_added_and_removed(name: str) -> None:
    """A worker that joins is routed to like the others; one that leaves with requests in
    flight closes each of them once (failed) and is never chosen again; every decision
    stays in range and every dispatch is heard once."""
    router, probes = build(name, 2, seed=5)
    seen = counting(router.policy)
    reqs = workload(5, n=60)
    open_ = [router.route(r, 0.01 * k) for k, r in enumerate(reqs[:20])]
    assert router.add_worker() == 2
    probes.append(Probe(4.0))
    later = [router.route(r, 0.5 + 0.01 * k) for k, r in enumerate(reqs[20:40])]
    assert all(0 <= d.worker < 3 for d in later)
    on_zero = sum(d.worker == 0 for d in open_ + later)
    closed = router.remove_worker(0, 1.0)
    del probes[0]
    assert len(closed) == on_zero and all(d.closed for d in closed)
    assert len(seen) == on_zero and not any(fb.ok for fb in seen)
    last = [router.route(r, 1.5 + 0.01 * k) for k, r in enumerate(reqs[40:])]
    assert all(0 <= d.worker < 2 for d in last)
    for d in open_ + later + last:
        router.complete(d, 3.0)
    assert len(seen) == len(reqs)
    assert sorted(fb.rid for fb in seen) == sorted(r.rid for r in reqs)
    assert all(s.in_flight == 0 for s in router.workers)


def odd_but_possible(router: Router, seed: int, steps: int = 200) -> int:
    """Route and close requests with what live engines and clients can send: empty and
    repeated prompts, time that stands still or jumps, engines that count more cached or
    prompt tokens than were sent, no output or a huge one, a TTFT after the E2E, loads far
    above the pool or the cap, workers that join and leave."""
    rng = np.random.default_rng(seed)
    heads = [rng.integers(0, 50, size=int(rng.integers(1, 3000))) for _ in range(3)]
    open_: list = []
    now = 0.0
    for _ in range(steps):
        now += float(rng.choice([0.0, 1e-9, rng.exponential(0.05), 100.0]))
        if rng.random() < 0.3:
            for w in range(len(router.workers)):
                router.report_load(w, running=int(rng.integers(0, 300)),
                                   waiting=int(rng.integers(0, 300)),
                                   kv_usage=float(rng.choice([0.0, 1.0, 1.5, rng.random()])),
                                   kv_capacity=int(rng.choice([0, 1, 16, 10**9])),
                                   max_running=int(rng.choice([0, 1, 1000])))
        units = (np.empty(0, dtype=np.int64) if rng.random() < 0.05 else
                 np.concatenate([heads[int(rng.integers(3))],
                                 rng.integers(0, 50, size=int(rng.integers(0, 50)))]))
        max_tokens = rng.choice([None, 0, 1, 2, 10**6])
        req = RouteRequest(units, max_tokens=None if max_tokens is None else int(max_tokens),
                           streamed=bool(rng.random() < 0.7))
        d = router.route(req, now)
        assert 0 <= d.worker < len(router.workers)
        open_.append(d)
        if req.streamed and rng.random() < 0.8:
            router.first_token(d, now + float(rng.choice([0.0, 1e-7, 0.5, 1e4])))
        while open_ and rng.random() < 0.6:
            done = open_.pop(int(rng.integers(len(open_))))
            n = len(done.req)
            ttft = rng.choice([None, 0.0, 1e-9, 0.3, 1e5])
            router.complete(done, now + float(rng.choice([0.0, 1e-9, 0.5, 1e5])),
                            ok=bool(rng.random() < 0.9),
                            ttft_s=None if ttft is None else float(ttft),
                            cached_tokens=rng.choice([None, 0, n, 2 * n + 7, 10**7]),
                            prompt_tokens=rng.choice([None, 0, n, n + 5, 1]),
                            output_tokens=rng.choice([None, 0, 1, 5, 10**6]))
        if rng.random() < 0.02 and len(router.workers) < 6:
            router.add_worker()
        if rng.random() < 0.01 and len(router.workers) > 1:
            router.remove_worker(int(rng.integers(len(router.workers))), now)
            open_ = [d for d in open_ if not d.closed]
    for d in open_:
        router.complete(d, now, ok=True)
    return steps


@pytest.mark.parametrize("name", [n for n in routing_names()
                                  if not make_router_policy(n).needs_probes])
def test_odd_but_possible_inputs_never_break_a_policy(name: str) -> None:
    for seed in range(3):
        router = Router(make_router_policy(name, seed=seed), 1 + seed)
        seen = counting(router.policy)
        routed = odd_but_possible(router, seed)
        assert sorted(fb.rid for fb in seen) == list(range(routed))  # each heard once
        assert router.open_dispatches == 0
        assert all(s.in_flight == 0 and s.prefill_units == 0 and s.decode_units == 0
                   for s in router.workers)
