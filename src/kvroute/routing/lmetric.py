"""``lmetric``: the LMetric rule (as in Dynamo and SMG), uncached prefill times queue length.

For each worker i, with ``P`` the prompt length in units::

    score_i = (P - matched_i) * (running_i + 1)

and the request goes to the allowed worker of least score (ties to the lowest index).
``matched_i`` is the prefix of this prompt the router's prefix index believes i holds
(``view.matched(req)[i]``); ``running_i`` is the router-counted ``WorkerState.in_flight``
(exact, and not stale like the engine's own ``running``). A worker believed to hold the
whole prompt scores 0 whatever its load, as in the published rule.

Parameters: none besides ``seed`` (the rule is deterministic; the seed is unused).
The score is a product of tokens and requests, not seconds: no latency prediction.
"""

from __future__ import annotations

import numpy as np

from kvroute.routing.base import ClusterView, Decision, RouteRequest, RoutingPolicy
from kvroute.routing.registry import register

__all__ = ["LMetric"]


@register
class LMetric(RoutingPolicy):
    name = "lmetric"
    uses_index = True

    def scores(self, req: RouteRequest, view: ClusterView) -> np.ndarray:
        """Every worker's score for ``req`` (the quantity the policy minimises)."""
        uncached = np.maximum(0, len(req) - view.matched(req))
        scores: np.ndarray = uncached * (view.in_flight() + 1)
        return scores

    def route(self, req: RouteRequest, view: ClusterView) -> Decision:
        return Decision(view.argmin(self.scores(req, view)), branch="argmin")
