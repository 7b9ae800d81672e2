"""``aibrix_prefix``: AIBrix's prefix-cache router.

Algorithm, with ``R_w`` the requests in flight on worker ``w`` (router-counted), over the
allowed workers only (the maximum, minimum, mean and deviation are theirs):

1. If ``max R - min R > imbalance_threshold``: the least running worker (ties: lowest
   index) -- branch ``"balance"``.
2. Otherwise the candidates are the workers with ``R_w <= mean R + std_factor * std R``
   (population standard deviation; a worker exactly at the limit is a candidate). Among
   them, the one with the longest prefix match in the router's index
   (``view.matched(req)``; ties: lowest index) -- branch ``"hit"``.
3. If that best candidate matches nothing (in particular when no worker matches
   anything), the least running worker (ties: lowest index) -- branch ``"miss"``.

The least running worker is always a candidate (its load is at most the mean), so the
candidate set is never empty.

Parameters (published defaults): ``seed`` 0 (unused, the rule is deterministic),
``imbalance_threshold`` 16 (an integer >= 0, requests), ``std_factor`` 2.0 (>= 0).
"""

from __future__ import annotations

import math
from numbers import Integral, Real

import numpy as np

from kvroute.errors import ConfigError
from kvroute.routing.base import ClusterView, Decision, RouteRequest, RoutingPolicy
from kvroute.routing.registry import register

__all__ = ["AibrixPrefix"]


@register
class AibrixPrefix(RoutingPolicy):
    name = "aibrix_prefix"
    uses_index = True

    def __init__(self, seed: int = 0, imbalance_threshold: int = 16,
                 std_factor: float = 2.0) -> None:
        super().__init__(seed)
        if isinstance(imbalance_threshold, bool) or not (
                isinstance(imbalance_threshold, Integral) and imbalance_threshold >= 0):
            raise ConfigError(f"{self.name}: imbalance_threshold must be an integer >= 0 "
                              f"(requests), got {imbalance_threshold!r}")
        if not (isinstance(std_factor, Real) and math.isfinite(std_factor)
                and std_factor >= 0):
            raise ConfigError(f"{self.name}: std_factor must be a finite number >= 0, "
                              f"got {std_factor!r}")
        self.imbalance_threshold: int = int(imbalance_threshold)
        self.std_factor: float = float(std_factor)

    def route(self, req: RouteRequest, view: ClusterView) -> Decision:
        running = view.in_flight()
        least = view.argmin(running)
        allowed = running[view.candidates()]
        if int(allowed.max()) - int(allowed.min()) > self.imbalance_threshold:
            return Decision(least, branch="balance")
        # population std (ddof 0); the tolerance keeps a worker exactly at the limit in
        limit = allowed.mean() + self.std_factor * allowed.std() + 1e-9
        matched = np.where((running <= limit) & view.allowed, view.matched(req), -1)
        best = int(np.argmax(matched))
        if matched[best] <= 0:
            return Decision(least, branch="miss")
        return Decision(best, branch="hit")
