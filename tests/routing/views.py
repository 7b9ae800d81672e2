"""Helpers shared by the routing policy tests."""

from __future__ import annotations

import numpy as np

from kvroute.routing.base import ClusterView, RouteRequest, WorkerState
from kvroute.routing.prefix_index import PrefixIndex


def view_of(workers: list[WorkerState], cached: dict[int, int] | None = None) -> ClusterView:
    """A view whose index holds ``arange(n)`` on worker w for each ``w: n`` of ``cached``."""
    index = PrefixIndex(len(workers))
    for w, n in (cached or {}).items():
        index.record(w, np.arange(n, dtype=np.int64), 0.0)
    return ClusterView(workers, index)


def prompt(n: int) -> RouteRequest:
    return RouteRequest(np.arange(n, dtype=np.int64))
