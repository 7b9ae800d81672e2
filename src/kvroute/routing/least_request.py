"""``least_request``: the worker with the fewest requests in flight.

Algorithm: ``L_w`` = requests routed to worker ``w`` and not yet closed, as the router
counts them (``WorkerState.in_flight``); route to ``argmin_w L_w`` over the allowed
workers, ties to the lowest index. The prompt is ignored.

Parameters: ``seed`` (default 0; unused, the rule is deterministic).
"""

from __future__ import annotations

from kvroute.routing.base import ClusterView, Decision, RouteRequest, RoutingPolicy
from kvroute.routing.registry import register

__all__ = ["LeastRequest"]


@register
class LeastRequest(RoutingPolicy):
    name = "least_request"

    def route(self, req: RouteRequest, view: ClusterView) -> Decision:
        return Decision(view.argmin(view.in_flight()), branch="least")
