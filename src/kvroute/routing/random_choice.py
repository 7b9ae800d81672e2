"""``random``: an allowed worker drawn uniformly from the policy's own seeded generator."""

from __future__ import annotations

from kvroute.routing.base import ClusterView, Decision, RouteRequest, RoutingPolicy
from kvroute.routing.registry import register

__all__ = ["Random"]


@register
class Random(RoutingPolicy):
    name = "random"

    def route(self, req: RouteRequest, view: ClusterView) -> Decision:
        allowed = view.candidates()
        return Decision(int(allowed[self.rng.integers(len(allowed))]))
