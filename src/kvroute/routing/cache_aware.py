"""``cache_aware``: SGLang 0.4.6's router (the paper's main baseline, paper.md 6.1).

Algorithm, with ``L_w`` the requests in flight on worker ``w`` as the router counts them:

1. ``imbalanced = (max L - min L) > balance_abs_threshold and
   max L > balance_rel_threshold * min L``. If imbalanced, route to ``argmin L`` (ties:
   lowest index) -- branch ``"balance"``.
2. Otherwise take the longest prefix match over all workers in the router's prefix index
   (``view.matched(req)``; ties: lowest index). If ``matched / len(prompt) >
   cache_threshold`` (strictly), route there -- branch ``"hit"``.
3. Otherwise route to the worker whose index tree is smallest (``view.index_sizes()``;
   ties: lowest index) -- branch ``"miss"``. An empty prompt counts as a miss.

Only allowed workers are considered: the loads, matches and tree sizes compared above are
theirs. The router then records the prompt under the chosen worker and counts it in
flight.

Parameters (published defaults): ``seed`` 0 (unused, the rule is deterministic),
``cache_threshold`` 0.5 (in [0, 1]), ``balance_abs_threshold`` 32 (an integer >= 0),
``balance_rel_threshold`` 1.0001 (>= 1).
"""

from __future__ import annotations

import numpy as np

from kvroute.params import integer, number
from kvroute.routing.base import ClusterView, Decision, RouteRequest, RoutingPolicy
from kvroute.routing.registry import register

__all__ = ["CacheAware"]


@register
class CacheAware(RoutingPolicy):
    name = "cache_aware"
    uses_index = True

    def __init__(self, seed: int = 0, cache_threshold: float = 0.5,
                 balance_abs_threshold: int = 32,
                 balance_rel_threshold: float = 1.0001) -> None:
        super().__init__(seed)
        self.cache_threshold: float = number(self.name, "cache_threshold", cache_threshold,
                                             low=0.0, high=1.0)
        self.balance_abs_threshold: int = integer(self.name, "balance_abs_threshold",
                                                  balance_abs_threshold, low=0,
                                                  hint="(requests)")
        self.balance_rel_threshold: float = number(self.name, "balance_rel_threshold",
                                                   balance_rel_threshold, low=1.0)

    def route(self, req: RouteRequest, view: ClusterView) -> Decision:
        load = view.in_flight()
        allowed = load[view.candidates()]
        hi, lo = int(allowed.max()), int(allowed.min())
        if hi - lo > self.balance_abs_threshold and hi > self.balance_rel_threshold * lo:
            return Decision(view.argmin(load), branch="balance")
        matched = view.matched(req)
        best = view.argmax(matched)
        if len(req) > 0 and matched[best] / len(req) > self.cache_threshold:
            return Decision(best, branch="hit")
        return self._miss(view, load)

    def _miss(self, view: ClusterView, load: np.ndarray) -> Decision:
        """Where a request goes when no worker holds enough of its prefix."""
        return Decision(view.argmin(view.index_sizes()), branch="miss")
