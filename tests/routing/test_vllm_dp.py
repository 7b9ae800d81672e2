"""vllm_dp: vLLM's data-parallel balancer, 4 * waiting + running from the counts last
published, blind to the caches."""

from __future__ import annotations

import pytest

from kvroute.errors import ConfigError
from kvroute.routing.base import WorkerState
from kvroute.routing.registry import make_router_policy
from kvroute.routing.vllm_dp import VllmDP
from tests.routing.views import prompt, view_of


def test_scores_by_hand_and_the_cache_is_not_read() -> None:
    """(running, waiting) (0, 2), (5, 0), (3, 1): scores 8, 5, 7 -> worker 1, although
    worker 0 holds the whole prompt."""
    ws = [WorkerState(0, running=0, waiting=2), WorkerState(1, running=5, waiting=0),
          WorkerState(2, running=3, waiting=1)]
    assert VllmDP().route(prompt(100), view_of(ws, {0: 100})).worker == 1


def test_a_request_counts_as_waiting_until_the_next_published_counts() -> None:
    """Idle workers: the first request goes to 0 (ties: the first), then 0 scores 4 (one
    sent, not yet in its counts), so the next go to 1 and 2. Worker 0's new counts (1
    running) are not seen before 0.1 s have passed since its snapshot; then its score is
    1 and it is chosen again. Counts that do not change are published again after 5 s,
    which clears what was sent."""
    ws = [WorkerState(i) for i in range(3)]
    view = view_of(ws)
    p = VllmDP()
    assert [p.route(prompt(10), view).worker for _ in range(3)] == [0, 1, 2]
    ws[0].running = 1
    view.now = 0.05  # too soon: still the old snapshot, 4 + 0 against 4 and 4
    assert p.route(prompt(10), view).worker == 0
    view.now = 0.2  # published: 0 now scores 1 (the request sent at 0.05 is in the counts)
    assert p.route(prompt(10), view).worker == 0
    ws[0].running = 0
    view.now = 6.0  # everything republished: all idle again, what was sent cleared
    assert p.route(prompt(10), view).worker == 0


def test_only_allowed_workers_and_membership_changes() -> None:
    ws = [WorkerState(0), WorkerState(1, waiting=1), WorkerState(2)]
    view = view_of(ws)
    view.allow([False, True, True])
    p = VllmDP()
    assert p.route(prompt(10), view).worker == 2
    p.on_worker_removed(0, 2)
    view2 = view_of([WorkerState(0, waiting=1), WorkerState(1, running=2)])
    view2.now = 1.0
    assert p.route(prompt(10), view2).worker == 1  # 4 against 2 (the sent one published)


def test_bad_parameters() -> None:
    with pytest.raises(ConfigError):
        make_router_policy("vllm_dp", {"publish_s": -1})
