"""``loadaware``: vLLM production-stack's load-aware prefix router (2026; anchors.md,
"Routers that predict latency or gate on load").

For each allowed worker ``w``, with ``load_w`` its requests in flight (router-counted) and
``mean`` their mean over the allowed workers::

    score_w = matched_w / len(prompt) - load_weight * (load_w - mean) / max(1, mean)

and the request goes to ``argmax score`` (ties: the lowest index). ``matched_w`` is the
prefix of the prompt the router's index believes ``w`` holds.

Parameters (published default): ``load_weight`` 1.0 (>= 0); ``seed`` unused.
"""

from __future__ import annotations

import numpy as np

from kvroute.params import number
from kvroute.routing.base import ClusterView, Decision, RouteRequest, RoutingPolicy
from kvroute.routing.registry import register

__all__ = ["LoadAware"]


@register
class LoadAware(RoutingPolicy):
    name = "loadaware"
    uses_index = True

    def __init__(self, seed: int = 0, load_weight: float = 1.0) -> None:
        super().__init__(seed)
        self.load_weight = number("loadaware", "load_weight", load_weight, low=0.0)

    def scores(self, req: RouteRequest, view: ClusterView) -> np.ndarray:
        """Every worker's score (the mean load is over the allowed workers)."""
        load = view.in_flight().astype(np.float64)
        mean = float(load[view.candidates()].mean())
        out: np.ndarray = (view.matched(req) / max(1, len(req))
                           - self.load_weight * (load - mean) / max(1.0, mean))
        return out

    def route(self, req: RouteRequest, view: ClusterView) -> Decision:
        return Decision(view.argmax(self.scores(req, view)), branch="max_score")
