"""``round_robin``: worker k, then k+1, cyclically, whatever the load or the prompt."""

from __future__ import annotations

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
        worker = self._next % len(view)
        self._next = worker + 1
        return Decision(worker)
