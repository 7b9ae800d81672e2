"""least_request: argmin of router-counted in-flight requests, ties to the lowest index."""

from __future__ import annotations

import numpy as np

from kvroute.routing import Router
from kvroute.routing.base import ClusterView, RouteRequest, WorkerState
from kvroute.routing.least_request import LeastRequest
from kvroute.routing.registry import make_router_policy

REQ = RouteRequest(np.array([1, 2, 3]))


def view(loads: list[int]) -> ClusterView:
    return ClusterView([WorkerState(i, in_flight=x) for i, x in enumerate(loads)], None)


def test_picks_fewest_in_flight() -> None:
    """Loads [3, 1, 2] go to worker 1."""
    d = LeastRequest().route(REQ, view([3, 1, 2]))
    assert (d.worker, d.branch) == (1, "least")


def test_ties_go_to_lowest_index() -> None:
    """Loads [2, 0, 0, 1] go to worker 1, all-equal loads to worker 0."""
    assert LeastRequest().route(REQ, view([2, 0, 0, 1])).worker == 1
    assert LeastRequest().route(REQ, view([4, 4, 4])).worker == 0


def test_ignores_engine_reported_load() -> None:
    """Only the router's own in-flight count matters, not what engines report running."""
    workers = [WorkerState(0, in_flight=1, running=0), WorkerState(1, in_flight=2, running=0)]
    workers[0].running, workers[0].waiting = 50, 50
    assert LeastRequest().route(REQ, ClusterView(workers, None)).worker == 0


def test_router_fills_workers_in_turn() -> None:
    """With no completions, 6 requests on 3 workers go 0, 1, 2, 0, 1, 2."""
    router = Router(make_router_policy("least_request"), 3)
    assert [router.route(RouteRequest(np.array([i])), 0.0).worker for i in range(6)] == [
        0, 1, 2, 0, 1, 2]
