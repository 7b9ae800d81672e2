"""The ``llmd`` policy: weighted queue, KV-free and prefix-block scores, random tie-break."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kvroute.errors import ConfigError
from kvroute.routing.base import ClusterView, WorkerState
from kvroute.routing.llmd import LlmD
from kvroute.routing.registry import make_router_policy
from tests.routing.views import prompt, view_of


def three_workers() -> ClusterView:
    ws = [WorkerState(0, waiting=2, kv_usage=0.5),
          WorkerState(1, waiting=6, kv_usage=0.1),
          WorkerState(2, waiting=4, kv_usage=0.9)]
    return view_of(ws, {0: 40, 1: 20, 2: 31})


def test_components_hand_computed() -> None:
    """waiting [2,6,4] -> [1,0,.5]; kv [.5,.1,.9] -> [.5,.9,.1]; blocks [2,1,1]/ceil(40/16)."""
    queue, kv, prefix = LlmD().components(prompt(40), three_workers())
    assert queue == pytest.approx([1.0, 0.0, 0.5])
    assert kv == pytest.approx([0.5, 0.9, 0.1])
    assert prefix == pytest.approx([2 / 3, 1 / 3, 1 / 3])


def test_weighted_sum_and_argmax() -> None:
    """2q + 2(1-kv) + 3p = [5, 2.8, 2.2]: worker 0, branch argmax."""
    policy = LlmD()
    assert policy.scores(prompt(40), three_workers()) == pytest.approx([5.0, 2.8, 2.2])
    decision = policy.route(prompt(40), three_workers())
    assert (decision.worker, decision.branch, decision.predicted_s) == (0, "argmax", None)


def test_weights_are_parameters() -> None:
    """Only the KV term (weights 0, 1, 0): the least-used pool, worker 1, wins."""
    policy = LlmD(queue_weight=0.0, kv_weight=1.0, prefix_weight=0.0)
    assert policy.scores(prompt(40), three_workers()) == pytest.approx([0.5, 0.9, 0.1])
    assert policy.route(prompt(40), three_workers()).worker == 1


def test_block_parameter() -> None:
    """With block 8: total ceil(40/8) = 5 blocks, matched [5, 2, 3] blocks."""
    _, _, prefix = LlmD(block=8).components(prompt(40), three_workers())
    assert prefix == pytest.approx([1.0, 0.4, 0.6])


def test_equal_queues_give_everyone_queue_score_one() -> None:
    """maxQ == minQ: every queue score is 1 (no division by zero)."""
    ws = [WorkerState(0, waiting=3), WorkerState(1, waiting=3, kv_usage=0.25)]
    queue, _, _ = LlmD().components(prompt(16), view_of(ws))
    assert queue.tolist() == [1.0, 1.0]
    assert LlmD().scores(prompt(16), view_of(ws)) == pytest.approx([4.0, 3.5])


def test_empty_prompt_has_zero_prefix_score() -> None:
    """ceil(0/16) = 0 blocks: the prefix term is 0, not a division by zero."""
    _, _, prefix = LlmD().components(prompt(0), view_of([WorkerState(0), WorkerState(1)]))
    assert prefix.tolist() == [0.0, 0.0]


def test_ties_broken_uniformly_at_random_among_the_best() -> None:
    """Workers 0, 1, 3 tie at the top: ~1/3 each over seeded draws; worker 2 never."""
    ws = [WorkerState(0), WorkerState(1), WorkerState(2, kv_usage=0.5), WorkerState(3)]
    view = view_of(ws)
    policy = LlmD(seed=11)
    draws = [policy.route(prompt(32), view) for _ in range(9000)]
    assert {d.branch for d in draws} == {"tie"}
    freq = np.bincount([d.worker for d in draws], minlength=4) / len(draws)
    assert freq[2] == 0
    assert freq[[0, 1, 3]] == pytest.approx([1 / 3] * 3, abs=0.03)
    again = LlmD(seed=11)
    assert [again.route(prompt(32), view).worker for _ in range(100)] == \
        [d.worker for d in draws[:100]]


@pytest.mark.parametrize("kwargs", [{"block": 0}, {"block": 2.0}, {"queue_weight": -1.0},
                                    {"kv_weight": math.inf}, {"prefix_weight": None}])
def test_invalid_parameters_raise_config_error(kwargs: dict[str, object]) -> None:
    """A bad weight or block is a ConfigError naming the parameter."""
    with pytest.raises(ConfigError, match=next(iter(kwargs))):
        LlmD(**kwargs)  # type: ignore[arg-type]


def test_registered_with_index() -> None:
    """The registry builds it by name with parameters, and it asks for a prefix index."""
    policy = make_router_policy("llmd", seed=1, prefix_weight=5.0)
    assert isinstance(policy, LlmD) and policy.prefix_weight == 5.0 and LlmD.uses_index
