"""``aibrix_prefix``: AIBrix's prefix-cache router (2026 rule), and ``aibrix_prefix_2025``.

``aibrix_prefix`` follows AIBrix's 2026 prefix-cache router (anchors.md, "Additions
(2026-12)"). With ``R_w`` the requests in flight on worker ``w`` (router-counted), over
the allowed workers only (the maximum, minimum, mean and deviation are theirs):

1. If ``max R - min R > imbalance_threshold`` (8): the least running worker (ties: lowest
   index) -- branch ``"balance"``.
2. Otherwise sort the workers by prefix match in the router's index (``view.matched``)
   descending, then by ``R`` ascending, then by index, and take the first whose
   ``R_w <= mean R + std_factor * std R`` (``std_factor`` 1; population standard
   deviation; a worker exactly at the limit qualifies) -- branch ``"hit"`` when it
   matches something, ``"miss"`` when it matches nothing (it is then the least running
   worker: every worker it passed over matched nothing too, or was over the limit).

The least running worker is always under the limit (its load is at most the mean), so a
worker is always found.

``aibrix_prefix_2025`` keeps the rule this project implemented from the 2025 description
(anchors.md, "Routing rules"): ``imbalance_threshold`` 16, ``std_factor`` 2, and among the
workers under the limit the longest match with ties to the lowest index (not the least
running); a miss goes to the least running worker. The two differ in the thresholds and
in that tie-break.

Parameters: ``seed`` 0 (unused, the rule is deterministic), ``imbalance_threshold`` (an
integer >= 0, requests), ``std_factor`` (>= 0); defaults as above for each name.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from kvroute.params import integer, number
from kvroute.routing.base import ClusterView, Decision, RouteRequest, RoutingPolicy
from kvroute.routing.registry import register

__all__ = ["AibrixPrefix", "AibrixPrefix2025"]


@register
class AibrixPrefix(RoutingPolicy):
    name = "aibrix_prefix"
    uses_index = True
    ties_by_running: ClassVar[bool] = True  # among equal matches, the least running first

    def __init__(self, seed: int = 0, imbalance_threshold: int = 8,
                 std_factor: float = 1.0) -> None:
        super().__init__(seed)
        self.imbalance_threshold: int = integer(self.name, "imbalance_threshold",
                                                imbalance_threshold, low=0, hint="(requests)")
        self.std_factor: float = number(self.name, "std_factor", std_factor, low=0.0)

    def route(self, req: RouteRequest, view: ClusterView) -> Decision:
        running = view.in_flight()
        least = view.argmin(running)
        allowed = view.candidates()
        loads = running[allowed]
        if int(loads.max()) - int(loads.min()) > self.imbalance_threshold:
            return Decision(least, branch="balance")
        # population std (ddof 0); the tolerance keeps a worker exactly at the limit in
        limit = loads.mean() + self.std_factor * loads.std() + 1e-9
        under = allowed[loads <= limit]
        matched = view.matched(req)[under]
        if self.ties_by_running:
            order = np.lexsort((under, running[under], -matched))  # last key is primary
            best = int(under[order[0]])
        else:
            best = int(under[np.argmax(matched)])
        if view.matched(req)[best] <= 0:
            return Decision(least, branch="miss")
        return Decision(best, branch="hit")


@register
class AibrixPrefix2025(AibrixPrefix):
    name = "aibrix_prefix_2025"
    ties_by_running = False

    def __init__(self, seed: int = 0, imbalance_threshold: int = 16,
                 std_factor: float = 2.0) -> None:
        super().__init__(seed, imbalance_threshold, std_factor)
