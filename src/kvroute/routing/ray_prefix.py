"""``ray_prefix``: Ray Serve LLM's ``PrefixCacheAffinityRouter`` (2026; anchors.md,
"Additions (2026-12)").

With ``q_w`` the requests in flight on worker ``w`` (router-counted; Ray probes replicas'
queue lengths), over the allowed workers:

1. If ``max q - min q <= imbalanced_threshold`` (10), look the prompt up in the prefix
   index (``view.matched(req)``). If the best match covers at least ``match_rate``
   (0.1) of the prompt, the candidates are the workers with that best match -- branch
   ``"hit"``; otherwise the workers whose index trees are smallest
   (``view.index_sizes()``, Ray's "smallest tenants") -- branch ``"miss"``.
2. Otherwise every allowed worker is a candidate -- branch ``"balance"``.

Among the candidates, power of two choices as Ray's base router picks within a rank: two
distinct candidates drawn from the policy's seeded generator, the one with fewer in
flight (a tie: the first drawn); a single candidate is taken as is.

Ray's tree holds characters; kvroute's index holds the router's units (token ids in the
simulator and with a tokenizer, characters otherwise), so the match rate is in units.

Parameters (Ray's defaults): ``imbalanced_threshold`` 10 (an integer >= 0, requests),
``match_rate`` 0.1 (in [0, 1]); ``seed`` seeds the draws.
"""

from __future__ import annotations

import numpy as np

from kvroute.params import integer, number
from kvroute.routing.base import ClusterView, Decision, RouteRequest, RoutingPolicy
from kvroute.routing.registry import register

__all__ = ["RayPrefix"]


@register
class RayPrefix(RoutingPolicy):
    name = "ray_prefix"
    uses_index = True

    def __init__(self, seed: int = 0, imbalanced_threshold: int = 10,
                 match_rate: float = 0.1) -> None:
        super().__init__(seed)
        self.imbalanced_threshold: int = integer("ray_prefix", "imbalanced_threshold",
                                                 imbalanced_threshold, low=0,
                                                 hint="(requests)")
        self.match_rate: float = number("ray_prefix", "match_rate", match_rate, low=0.0,
                                        high=1.0)

    def candidates(self, req: RouteRequest, view: ClusterView) -> tuple[np.ndarray, str]:
        """The workers step 1 or 2 leaves to the final draw, and the branch."""
        load = view.in_flight()
        allowed = view.candidates()
        if int(load[allowed].max()) - int(load[allowed].min()) > self.imbalanced_threshold:
            return allowed, "balance"
        matched = view.matched(req)[allowed]
        best = int(matched.max())
        if len(req) > 0 and best / len(req) >= self.match_rate and best > 0:
            return allowed[matched == best], "hit"
        sizes = view.index_sizes()[allowed]
        return allowed[sizes == sizes.min()], "miss"

    def route(self, req: RouteRequest, view: ClusterView) -> Decision:
        pool, branch = self.candidates(req, view)
        if len(pool) == 1:
            return Decision(int(pool[0]), branch=branch)
        a, b = (int(pool[x]) for x in self.rng.choice(len(pool), size=2, replace=False))
        la, lb = view.workers[a].in_flight, view.workers[b].in_flight
        return Decision(b if lb < la else a, branch=branch)
