"""ttft_aware (the vLLM router): 0.6 x pending x 100 ms + 0.4 x tokens x 0.5 ms, argmin."""

from __future__ import annotations

import pytest

from kvroute.errors import ConfigError
from kvroute.routing.base import ClusterView, WorkerState
from kvroute.routing.registry import make_router_policy
from kvroute.routing.ttft_aware import TtftAware
from tests.routing.views import prompt


def test_prediction_by_hand() -> None:
    """800 characters = 200 tokens: 0.4 x 0.1 s = 0.04 s; pending [3, 1, 2] adds
    0.18 / 0.06 / 0.12 s -> worker 1, predicted 0.10 s."""
    view = ClusterView([WorkerState(i, in_flight=x) for i, x in enumerate([3, 1, 2])], None)
    policy = TtftAware()
    assert policy.predictions(prompt(800), view) == pytest.approx([0.22, 0.10, 0.16])
    d = policy.route(prompt(800), view)
    assert (d.worker, d.branch) == (1, "min_ttft")
    assert d.predicted_s == pytest.approx(0.10)


def test_cache_blind_ties_and_mask() -> None:
    """Equal pending: the lowest index; a mask keeps the choice among the allowed."""
    view = ClusterView([WorkerState(i, in_flight=x) for i, x in enumerate([2, 1, 1])], None)
    assert TtftAware().route(prompt(10), view).worker == 1
    view.allow([True, False, True])
    assert TtftAware().route(prompt(10), view).worker == 2
    token_units = TtftAware(units_per_token=1.0).predictions(prompt(200), view)
    assert token_units[0] == pytest.approx(0.6 * 0.2 + 0.4 * 0.1)


def test_registry_and_bad_parameters() -> None:
    """Registered without an index; negative or zero-divisor parameters are refused."""
    assert isinstance(make_router_policy("ttft_aware"), TtftAware) and not TtftAware.uses_index
    with pytest.raises(ConfigError, match="pending_s"):
        TtftAware(pending_s=-1.0)
    with pytest.raises(ConfigError, match="units_per_token"):
        TtftAware(units_per_token=0.0)
