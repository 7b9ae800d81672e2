"""loadaware (production-stack): match ratio minus normalised load above the mean."""

from __future__ import annotations

import pytest

from kvroute.errors import ConfigError
from kvroute.routing.base import WorkerState
from kvroute.routing.loadaware import LoadAware
from kvroute.routing.registry import make_router_policy
from tests.routing.views import prompt, view_of


def test_scores_by_hand() -> None:
    """100-unit prompt, matched [80, 0, 40], in flight [6, 2, 1]: mean 3, so scores
    0.8 - 1, 0 + 1/3, 0.4 + 2/3 -> worker 2."""
    ws = [WorkerState(0, in_flight=6), WorkerState(1, in_flight=2), WorkerState(2, in_flight=1)]
    view = view_of(ws, {0: 80, 2: 40})
    p = LoadAware()
    assert p.scores(prompt(100), view) == pytest.approx([-0.2, 1 / 3, 0.4 + 2 / 3])
    assert p.route(prompt(100), view).worker == 2


def test_idle_cluster_follows_the_prefix_and_the_mask() -> None:
    view = view_of([WorkerState(0), WorkerState(1), WorkerState(2)], {1: 50})
    assert LoadAware().route(prompt(100), view).worker == 1
    view.allow([True, False, True])
    assert LoadAware().route(prompt(100), view).worker == 0


def test_bad_weight() -> None:
    with pytest.raises(ConfigError):
        make_router_policy("loadaware", {"load_weight": -1})
