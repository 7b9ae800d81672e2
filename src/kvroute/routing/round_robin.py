"""``round_robin``: worker k, then k+1, cyclically, whatever the load or the prompt.

A worker that is not allowed for this request is skipped: the request goes to the next
allowed one after it, and the cycle continues from there.
"""

from __future__ import annotations

import numpy as np

from kvroute.routing.base import ClusterView, Decision, RouteRequest, RoutingPolicy
from kvroute.routing.registry import register

__all__ = ["RoundRobin"]


@register
class RoundRobin(RoutingPolicy):
    name = "round_robin"

    def __init__(self, seed: int = 0) -> None:
        super().__init__(seed)
        self._next = 0

    def route(self, req: RouteRequest, view: ClusterView) -> Decision:
        allowed = view.candidates()
        start = np.searchsorted(allowed, self._next % len(view))
        worker = int(allowed[start % len(allowed)])
        self._next = worker + 1
        return Decision(worker)
