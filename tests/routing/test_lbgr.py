"""LBGR (paper.md 6.2) on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from kvroute.routing.base import ClusterView, Decision, Feedback, RouteRequest, WorkerState
from kvroute.routing.lbgr import LBGR
from kvroute.routing.prefix_index import PrefixIndex


def view(n: int, now: float = 0.0) -> tuple[ClusterView, PrefixIndex]:
    index = PrefixIndex(n)
    v = ClusterView([WorkerState(i) for i in range(n)], index)
    v.now = now
    return v, index


def req(units: range | list[int], rid: int) -> RouteRequest:
    return RouteRequest(np.asarray(list(units), dtype=np.int64), rid=rid)


def done(p: LBGR, worker: int, rid: int, now: float, e2e_s: float | None, ok: bool = True,
         units: int = 0) -> None:
    p.on_complete(Feedback(worker=worker, rid=rid, ok=ok, prompt_units=units, now=now,
                           decision=Decision(worker), e2e_s=e2e_s))


def test_uncached_units_and_queue_decide() -> None:
    """base = 1 per uncached unit; the queue adds round(base); a prefix hit wins."""
    p = LBGR()
    v, index = view(3)
    d = p.route(req(range(100), 0), v)
    assert (d.worker, d.predicted_s) == (0, pytest.approx(0.100))  # all equal: lowest index
    assert p.queue == [100, 0, 0]
    d = p.route(req(range(1000, 1100), 1), v)
    assert d.worker == 1  # worker 0 now predicts 100 + 100
    index.record(2, np.arange(500, 560), 0.0)
    d = p.route(req(range(500, 600), 2), v)  # worker 2: 40 uncached; others 100 + queue
    assert d.worker == 2 and d.predicted_s == pytest.approx(0.040)
    assert p.queue == [100, 100, 40]


def test_switching_tolerance_and_ties() -> None:
    """A later worker must beat the best by more than 1.0 to replace it."""
    p = LBGR()
    v, index = view(2)
    index.record(1, np.arange(1), 0.0)  # worker 1 caches one unit: 99 vs 100, not > 1 better
    assert p.route(req(range(100), 0), v).worker == 0
    p2 = LBGR()
    v2, index2 = view(2)
    index2.record(1, np.arange(2), 0.0)  # 98 vs 100: better by 2
    assert p2.route(req(range(100), 0), v2).worker == 1


def test_queue_decays_every_20ms_with_floor() -> None:
    """Q <- floor(Q*31/32) per 20 ms tick; completion subtracts the decayed reservation."""
    p = LBGR()
    v, _ = view(1)
    p.route(req(range(1000), 7), v)
    assert p.queue == [1000]
    v.now = 0.045  # two ticks: floor(floor(1000*31/32)*31/32) = floor(968*31/32) = 937
    p.route(req(range(2000, 2001), 8), v)
    assert p.queue == [937 + 1]
    # request 7 completes at 0.06 (3 ticks): queue 938 -> floor(938*31/32) = 908;
    # reservation round(1000 * (31/32)^3) = round(909.2) = 909 -> max(0, 908 - 909) = 0
    done(p, 0, 7, 0.06, e2e_s=0.5)
    assert p.queue == [0]


def test_residual_learning_is_rls_on_a_bias() -> None:
    """First update: gain P0/(lambda+P0) ~ 1, theta ~ residual; residual clamped >= 1."""
    p = LBGR()
    v, _ = view(2)
    p.route(req(range(100), 1), v)  # worker 0, base 100, Q at routing 0
    done(p, 0, 1, 0.0, e2e_s=0.350)  # y = 350 ms, residual 250
    g = 1e6 / (0.992 + 1e6)
    assert p.theta[0] == pytest.approx(g * 250)
    p_next = (1 - g) * 1e6 / 0.992
    assert p.p[0] == pytest.approx(p_next)
    p.route(req(range(5000, 5100), 2), v)  # worker 1 (worker 0 predicts 100 + 250)
    p.route(req(range(6000, 6100), 3), v)  # worker 1 again (200 < 350)
    assert p.queue[1] == 200
    done(p, 1, 2, 0.0, e2e_s=0.010)  # faster than predicted: residual clamped to 1
    assert p.theta[1] == pytest.approx(g * 1.0)


def test_errors_release_the_queue_but_do_not_learn() -> None:
    """A failed request frees its reservation; theta is unchanged."""
    p = LBGR()
    v, _ = view(1)
    p.route(req(range(50), 4), v)
    done(p, 0, 4, 0.0, e2e_s=None, ok=False)
    assert p.queue == [0] and p.theta == [0.0]
    done(p, 0, 4, 0.0, e2e_s=1.0)  # unknown or repeated completions are ignored
    assert p.theta == [0.0]


def test_removing_a_worker_keeps_the_others_state() -> None:
    """Removing worker 0 drops its queue and residual; worker 1's move to index 0."""
    p = LBGR()
    v, _ = view(2)
    p.route(req(range(100), 1), v)
    p.route(req(range(1000, 1030), 2), v)
    assert p.queue == [100, 30]
    p.on_worker_removed(0, 1)
    assert p.queue == [30] and len(p.theta) == len(p.p) == 1
