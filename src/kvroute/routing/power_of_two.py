"""``power_of_two``: the less loaded of two workers drawn at random ("power of two choices").

Algorithm: draw two distinct allowed workers uniformly without replacement from the
policy's seeded generator (``self.rng``); route to the one with fewer requests in flight
(router-counted ``WorkerState.in_flight``); on a tie, the first one drawn. With a single
allowed worker, that worker (no draw is made).

Branches: ``"lighter"`` (the two differ in load), ``"tie"`` (equal load, first drawn),
``"single"`` (one worker).

Parameters: ``seed`` (default 0) seeds the generator.
"""

from __future__ import annotations

from kvroute.routing.base import ClusterView, Decision, RouteRequest, RoutingPolicy
from kvroute.routing.registry import register

__all__ = ["PowerOfTwo"]


@register
class PowerOfTwo(RoutingPolicy):
    name = "power_of_two"

    def route(self, req: RouteRequest, view: ClusterView) -> Decision:
        allowed = view.candidates()
        if len(allowed) == 1:
            return Decision(int(allowed[0]), branch="single")
        a, b = (int(allowed[x]) for x in self.rng.choice(len(allowed), size=2, replace=False))
        la, lb = view.workers[a].in_flight, view.workers[b].in_flight
        if la == lb:
            return Decision(a, branch="tie")
        return Decision(a if la < lb else b, branch="lighter")
