"""The Router: membership, engine state, routing with a mask of allowed workers."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from kvroute.errors import ConfigError
from kvroute.routing import make_router_policy, routing_names
from kvroute.routing.base import (
    ClusterView,
    Decision,
    Feedback,
    RouteRequest,
    RoutingPolicy,
    WorkerState,
)
from kvroute.routing.router import Dispatch, Router


class Probe:
    """A stand-in for a simulated worker's exact knowledge (what ``oracle`` reads)."""

    def __init__(self, k: int) -> None:
        self.k = k

    def predict_e2e(self, tokens: np.ndarray, output_len: int) -> float:
        return float((len(tokens) * (self.k + 3)) % 11 + output_len)


def spy(policy: RoutingPolicy) -> tuple[list[str], list[Feedback]]:
    """Record, in order, every ``route`` ("route") and ``on_complete`` (its Feedback) the
    router makes on ``policy``."""
    calls: list[str] = []
    feedback: list[Feedback] = []
    route, on_complete = policy.route, policy.on_complete

    def routed(req: RouteRequest, view: ClusterView) -> Decision:
        calls.append("route")
        return route(req, view)

    def completed(fb: Feedback) -> None:
        calls.append(f"complete {fb.rid}")
        feedback.append(fb)
        on_complete(fb)

    policy.route = routed  # type: ignore[method-assign]
    policy.on_complete = completed  # type: ignore[method-assign]
    return calls, feedback


def prompts(n: int, seed: int = 0) -> list[np.ndarray]:
    """Prompts sharing a few prefixes, so prefix-aware policies have hits to chase."""
    rng = np.random.default_rng(seed)
    heads = [rng.integers(0, 1000, size=64) for _ in range(3)]
    return [np.concatenate([heads[int(rng.integers(3))],
                            rng.integers(0, 1000, size=int(rng.integers(1, 64)))])
            for _ in range(n)]


def masks(n: int, workers: int, seed: int = 1) -> list[np.ndarray]:
    """Random masks, each with at least one worker allowed."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        m = rng.random(workers) < 0.5
        m[int(rng.integers(workers))] = True
        out.append(m)
    return out


def make_router(name: str, workers: int = 4, **kwargs: Any) -> Router:
    return Router(make_router_policy(name, seed=3, **kwargs), workers,
                  probes=[Probe(k) for k in range(workers)])


CASES = [(name, {}) for name in routing_names()] + [("dynamo", {"temperature": 0.5})]


@pytest.mark.parametrize(("name", "kwargs"), CASES, ids=[f"{n}{'-' + str(k) if k else ''}"
                                                          for n, k in CASES])
def test_a_disallowed_worker_is_never_chosen(name: str, kwargs: dict[str, Any]) -> None:
    """Every registered policy picks only allowed workers, under loads that build up and
    drain; each dispatch is completed once and the policy hears exactly that, never a
    completion of a pick that was refused."""
    router = make_router(name, **kwargs)
    calls, feedback = spy(router.policy)
    for state in router.workers:  # some engine load for the policies that read it
        router.report_load(state.index, running=state.index, waiting=3 - state.index,
                           kv_usage=0.2 * state.index, kv_capacity=1000)
    open_: list[Dispatch] = []
    for k, (units, mask) in enumerate(zip(prompts(300), masks(300, 4), strict=True)):
        now = k * 0.01
        d = router.route(RouteRequest(units, max_tokens=4), now, mask)
        assert mask[d.worker], (k, mask, d.worker)
        open_.append(d)
        if k % 3 != 1:  # let the load build up, then drain the oldest
            first = open_.pop(0)
            router.first_token(first, now)
            router.complete(first, now + 0.005)
    for d in open_:
        router.complete(d, 4.0, ok=False)
    assert router.open_dispatches == 0
    assert [s.in_flight for s in router.workers] == [0, 0, 0, 0]
    assert calls.count("route") == 300 and len(feedback) == 300
    assert sorted(fb.rid for fb in feedback) == list(range(300))
    # a completion is heard only after its route, never for a pick made in between
    for k, call in enumerate(calls):
        if call.startswith("complete"):
            rid = int(call.split()[1])
            assert calls[:k].count("route") > rid


@pytest.mark.parametrize(("name", "kwargs"), CASES, ids=[f"{n}{'-' + str(k) if k else ''}"
                                                          for n, k in CASES])
def test_an_all_true_mask_decides_as_no_mask(name: str, kwargs: dict[str, Any]) -> None:
    """With every worker allowed a policy decides exactly as without a mask."""
    decisions = []
    for mask in (None, np.ones(4, dtype=bool)):
        router = make_router(name, **kwargs)
        out = []
        for k, units in enumerate(prompts(120, seed=5)):
            d = router.route(RouteRequest(units, max_tokens=2), k * 0.01, mask)
            out.append((d.worker, d.decision.branch, d.decision.predicted_s))
            if k % 2:
                router.complete(d, k * 0.01 + 0.003)
        decisions.append(out)
    assert decisions[0] == decisions[1]


def test_a_single_allowed_worker_gets_the_request() -> None:
    for name in routing_names():
        for w in range(4):
            router = make_router(name)
            mask = np.arange(4) == w
            assert router.route(RouteRequest(np.arange(10)), 0.0, mask).worker == w, name


class Stubborn(RoutingPolicy):
    name = "stubborn"

    def route(self, req: RouteRequest, view: ClusterView) -> Decision:
        return Decision(0)


def test_a_policy_that_ignores_the_mask_is_an_error() -> None:
    router = Router(Stubborn(), 2)
    with pytest.raises(ConfigError, match="not one of the 1 allowed"):
        router.route(RouteRequest(np.arange(3)), 0.0, [False, True])
    with pytest.raises(ValueError, match="no worker is allowed"):
        router.route(RouteRequest(np.arange(3)), 0.0, [False, False])
    with pytest.raises(ValueError, match="3 entries for 2 workers"):
        router.route(RouteRequest(np.arange(3)), 0.0, [True, True, True])
    assert router.open_dispatches == 0 and router.workers[0].in_flight == 0


def test_view_helpers_respect_the_mask() -> None:
    view = ClusterView([WorkerState(i) for i in range(4)], None)
    values = np.array([1, 0, 0, 5])
    assert view.candidates().tolist() == [0, 1, 2, 3] and view.allowed.all()
    assert (view.argmin(values), view.argmax(values)) == (1, 3)
    view.allow([True, False, True, False])
    assert view.candidates().tolist() == [0, 2]
    assert view.allowed.tolist() == [True, False, True, False]
    assert (view.argmin(values), view.argmax(values)) == (2, 0)
    view.allow([True] * 4)
    assert view.candidates().tolist() == [0, 1, 2, 3]


def test_add_and_remove_workers() -> None:
    """Adding a worker grows the state, the index and the policy; removing one closes its
    open dispatches once (the policy hears them failed), renumbers the rest, and tells
    the policy which index left."""
    router = Router(make_router_policy("lbgr"), 3)
    events: list[tuple[str, int, int]] = []
    policy = router.policy
    changed, removed = policy.on_workers_changed, policy.on_worker_removed

    def on_changed(count: int) -> None:
        events.append(("changed", count, -1))
        changed(count)

    def on_removed(index: int, count: int) -> None:
        events.append(("removed", index, count))
        removed(index, count)

    policy.on_workers_changed = on_changed  # type: ignore[method-assign]
    policy.on_worker_removed = on_removed  # type: ignore[method-assign]
    _, feedback = spy(policy)
    assert router.add_worker() == 3
    assert events[0] == ("changed", 4, -1)
    assert [s.index for s in router.workers] == [0, 1, 2, 3]
    assert router.index is not None and len(router.index) == 4
    by_worker: dict[int, Dispatch] = {}
    for w in range(4):
        d = router.route(RouteRequest(np.arange(w * 10, w * 10 + 8)), 0.0,
                         np.arange(4) == w)
        by_worker[w] = d
    assert router.open_dispatches == 4
    closed = router.remove_worker(1, 1.0)
    assert closed == [by_worker[1]] and by_worker[1].closed
    assert [(fb.worker, fb.ok) for fb in feedback] == [(1, False)]
    assert ("removed", 1, 3) in events
    assert [s.index for s in router.workers] == [0, 1, 2]
    assert [s.in_flight for s in router.workers] == [1, 1, 1]
    assert [by_worker[w].worker for w in (0, 2, 3)] == [0, 1, 2]
    assert len(router.index) == 3
    router.index.check_integrity()
    assert router.matched(RouteRequest(np.arange(30, 38))).tolist() == [0, 0, 8]
    assert not router.complete(by_worker[1], 2.0)  # closed already: nothing happens
    for w in (0, 2, 3):
        assert router.complete(by_worker[w], 2.0)
    assert [(fb.worker, fb.ok) for fb in feedback[1:]] == [(0, True), (1, True), (2, True)]
    assert router.open_dispatches == 0 and len(feedback) == 4
    assert [s.completed for s in router.workers] == [1, 1, 1]


def test_report_load_and_forget_cache() -> None:
    router = Router(make_router_policy("llmd"), 2)
    router.report_load(1, running=5, waiting=2, kv_usage=0.25, kv_capacity=100_000)
    s = router.workers[1]
    assert (s.running, s.waiting, s.kv_usage, s.kv_capacity) == (5, 2, 0.25, 100_000)
    assert router.workers[0].running == 0
    # llmd's queue score now prefers the idle worker
    assert router.route(RouteRequest(np.arange(4)), 0.0).worker == 0
    assert router.matched(RouteRequest(np.arange(4))).tolist() == [4, 0]
    router.forget_cache(0)
    assert router.matched(RouteRequest(np.arange(4))).tolist() == [0, 0]


@pytest.mark.parametrize("bad", [{"kv_usage": math.nan}, {"kv_usage": math.inf},
                                 {"kv_usage": -0.1}, {"running": -1}, {"kv_capacity": -5}])
def test_an_unusable_engine_load_is_refused_and_changes_nothing(bad: dict) -> None:
    # a NaN usage once reached llmd's scores and every decision after it failed
    router = Router(make_router_policy("llmd"), 2)
    router.report_load(1, running=5, waiting=2, kv_usage=0.25, kv_capacity=100_000)
    load = {"running": 1, "waiting": 0, "kv_usage": 0.5, "kv_capacity": 1000, **bad}
    with pytest.raises(ValueError, match="not usable"):
        router.report_load(1, **load)
    s = router.workers[1]
    assert (s.running, s.waiting, s.kv_usage, s.kv_capacity) == (5, 2, 0.25, 100_000)
    assert router.route(RouteRequest(np.arange(4)), 0.0).worker == 0


def test_the_index_is_kept_for_policies_that_use_it_or_on_request() -> None:
    assert Router(make_router_policy("round_robin"), 2).index is None
    assert Router(make_router_policy("lbgr"), 2).index is not None
    kept = Router(make_router_policy("round_robin"), 2, keep_index=True)
    assert kept.index is not None
    d = kept.route(RouteRequest(np.arange(6)), 0.0)
    assert kept.matched(RouteRequest(np.arange(6))).tolist()[d.worker] == 6
    with pytest.raises(RuntimeError, match="uses_index"):  # the policy did not declare it
        kept.view.matched(RouteRequest(np.arange(6)))
    assert Router(make_router_policy("random"), 2).matched(
        RouteRequest(np.arange(6))).tolist() == [0, 0]


def test_cached_tokens_reach_the_policy_in_the_routers_units() -> None:
    """A router keyed on characters (400 units) in front of an engine that counts 100
    prompt tokens, 30 of them cached: the policy is told 120 cached units. Without the
    engine's prompt count the units are taken to be its tokens; never more than the
    prompt."""
    policy = make_router_policy("learned")
    _, feedback = spy(policy)
    router = Router(policy, 2)
    for cached, prompt_tokens in ((30, 100), (30, None), (500, 100)):
        d = router.route(RouteRequest(np.arange(400)), 0.0)
        router.complete(d, 1.0, ttft_s=0.1, cached_tokens=cached, prompt_tokens=prompt_tokens)
    assert [(fb.cached_tokens, fb.cached_units) for fb in feedback] == [
        (30, 120), (30, 30), (500, 400)]


def test_requests_that_do_not_stream_are_counted_apart() -> None:
    """``unstreamed_units``: the prompt units, among ``prefill_units``, of requests whose
    first token the router will not see; they leave it when the request completes (or, if
    a first token comes after all, with it)."""
    router = Router(make_router_policy("round_robin"), 2)
    quiet = router.route(RouteRequest(np.arange(300, dtype=np.int64), streamed=False), 0.0)
    loud = router.route(RouteRequest(np.arange(200, dtype=np.int64)), 0.0)
    states = router.workers
    assert [(s.prefill_units, s.unstreamed_units) for s in states] == [(300, 300), (200, 0)]
    router.complete(quiet, 1.0)
    router.first_token(loud, 0.5)
    assert [(s.prefill_units, s.unstreamed_units, s.decode_units) for s in states] \
        == [(0, 0, 0), (0, 0, 200)]
    late = router.route(RouteRequest(np.arange(100, dtype=np.int64), streamed=False), 2.0)
    router.first_token(late, 2.5)
    assert states[late.worker].unstreamed_units == 0
    assert states[late.worker].decode_units == 100


def test_the_policy_hears_each_first_token_once() -> None:
    policy = make_router_policy("round_robin")
    heard: list[tuple[int, int, float]] = []
    policy.on_first_token = lambda rid, worker, now: heard.append((rid, worker, now))  # type: ignore[method-assign]
    router = Router(policy, 2)
    d = router.route(RouteRequest(np.arange(10, dtype=np.int64), rid=5), 0.0)
    router.first_token(d, 0.25)
    router.first_token(d, 0.5)  # a second report changes nothing
    router.complete(d, 1.0)
    router.first_token(d, 1.5)  # closed
    assert heard == [(5, d.worker, 0.25)]


@pytest.mark.parametrize("name, records", [("learned", True), ("cache_aware_v2", False),
                                           ("llmd", False)])
def test_replies_are_recorded_only_for_a_policy_that_declares_it(name: str,
                                                                  records: bool) -> None:
    router = Router(make_router_policy(name), 2)
    prompt, reply = np.arange(10, 16), np.arange(100, 104)
    d = router.route(RouteRequest(prompt), 0.0)
    router.replied(d, np.concatenate([prompt, reply]), 1.0)
    assert router.complete(d, 1.0)
    nxt = RouteRequest(np.concatenate([prompt, reply, [7, 8]]))
    # the next turn: the prompt, the reply, then the user's new message
    assert router.matched(nxt).tolist()[d.worker] == (10 if records else 6)
    d2 = router.route(RouteRequest(np.arange(20, 24)), 2.0)
    assert router.complete(d2, 3.0)
    router.replied(d2, np.arange(20, 30), 3.0)  # closed: its worker may be gone, no record
    assert router.matched(RouteRequest(np.arange(20, 30))).tolist()[d2.worker] == 4
