"""The ``lmetric`` policy: argmin of uncached prefill units times (router-counted load + 1)."""

from __future__ import annotations

from kvroute.routing.base import WorkerState
from kvroute.routing.lmetric import LMetric
from kvroute.routing.registry import make_router_policy
from tests.routing.views import prompt, view_of


def test_product_hand_computed() -> None:
    """Scores (100-60)*4, 100*1, (100-80)*2 = [160, 100, 40]: worker 2."""
    ws = [WorkerState(0, in_flight=3), WorkerState(1), WorkerState(2, in_flight=1)]
    view = view_of(ws, {0: 60, 2: 80})
    policy = LMetric()
    assert policy.scores(prompt(100), view).tolist() == [160, 100, 40]
    decision = policy.route(prompt(100), view)
    assert (decision.worker, decision.branch, decision.predicted_s) == (2, "argmin", None)


def test_load_outweighs_affinity() -> None:
    """With 5 in flight the 80-unit hit scores 20*6 = 120 > 100: the empty idle worker wins."""
    ws = [WorkerState(0, in_flight=3), WorkerState(1), WorkerState(2, in_flight=5)]
    view = view_of(ws, {0: 60, 2: 80})
    assert LMetric().scores(prompt(100), view).tolist() == [160, 100, 120]
    assert LMetric().route(prompt(100), view).worker == 1


def test_full_hit_scores_zero_whatever_the_load() -> None:
    """A worker believed to hold the whole prompt scores 0 even with 50 in flight."""
    ws = [WorkerState(0), WorkerState(1, in_flight=50)]
    view = view_of(ws, {1: 64})
    assert LMetric().scores(prompt(64), view).tolist() == [64, 0]
    assert LMetric().route(prompt(64), view).worker == 1


def test_ties_go_to_lowest_index() -> None:
    """Equal products (100*1, 50*2, 100*1): the lowest index among them wins."""
    ws = [WorkerState(0), WorkerState(1, in_flight=1), WorkerState(2)]
    view = view_of(ws, {1: 50})
    assert LMetric().scores(prompt(100), view).tolist() == [100, 100, 100]
    assert LMetric().route(prompt(100), view).worker == 0
    ws[0].in_flight = 1  # worker 0 now 200; workers 1 and 2 tie at 100
    assert LMetric().route(prompt(100), view_of(ws, {1: 50})).worker == 1


def test_uses_router_count_not_engine_running() -> None:
    """The load factor is WorkerState.in_flight; the engine's running/waiting are ignored."""
    ws = [WorkerState(0, running=40, waiting=9), WorkerState(1, in_flight=1)]
    assert LMetric().route(prompt(10), view_of(ws)).worker == 0


def test_registered_with_index() -> None:
    """The registry builds it by name with a seed, and it asks for a prefix index."""
    assert isinstance(make_router_policy("lmetric", seed=5), LMetric) and LMetric.uses_index
