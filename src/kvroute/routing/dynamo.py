"""``dynamo``: NVIDIA Dynamo's KV router, a block-level cost of new prefill plus decode load.

Follows Dynamo's 2026 cost (anchors.md, "Additions (2026-12)"). For each worker i, with
``P`` the prompt length in units, ``b`` the block size and ``pb = ceil(P / b)`` the
request's own blocks::

    adjusted_prefill_i = max(0, active_prefill_i / b + pb - overlap_blocks_i)
    cost_i = prefill_scale * adjusted_prefill_i + active_decode_blocks_i + pb
             + request_weight * active_requests_i

and the request goes to ``argmin cost`` at temperature 0 (ties to the lowest index). At a
temperature ``T > 0`` the costs are min-max normalised to ``[0, 1]`` and a worker is drawn
with probability proportional to ``exp(-norm_cost_i / T)`` (lower cost, likelier) from the
policy's seeded generator; equal costs everywhere give a uniform draw. Both rules run over
the allowed workers only (the normalisation too). With ``lmetric=True`` (Dynamo's LMetric
option) the cost is ``adjusted_prefill_i * (active_decode_blocks_i + 1)`` instead.

Versions: the 2025 rule (``max(0, (active_prefill_i + P) / b - overlap_blocks_i) +
active_decode_blocks_i``) differs from this one only by terms that are the same on every
worker (``pb`` added, ``P / b`` rounded up), and the clamp at 0 never binds (overlap
blocks are at most ``floor(P / b)``), so both choose the same worker in every state, at
every temperature (min-max normalisation removes a common shift): there is no older
variant to keep. Not modelled: host-tier (0.75) and disk-tier (0.25) hit weights (the
index knows one tier) and the optional model that decays active prefill load (off by
default in Dynamo).

What the router knows stands in for Dynamo's own counters:

* ``active_prefill_i`` = ``WorkerState.prefill_units``: prompt units of requests routed to i
  that have no first token yet (whole prompts; their cached parts are not subtracted);
* ``overlap_blocks_i`` = ``view.matched(req)[i] // b``: whole blocks of this prompt the
  router's prefix index believes i holds;
* ``active_decode_blocks_i`` ≈ ``WorkerState.decode_units / b``: an approximation, the
  prompt units of in-flight requests past their first token, in blocks (the KV those
  requests hold, less the tokens they have generated, which the router does not count);
* ``active_requests_i`` = ``WorkerState.in_flight`` (router-counted).

Parameters (published defaults):

* ``prefill_scale`` = 1.0: weight of the prefill blocks against the decode blocks (>= 0);
* ``block`` = 16 units per KV block (Dynamo's default; Mooncake traces use 512, so pass
  ``block=512`` when replaying them);
* ``temperature`` = 0.0: 0 is deterministic argmin, > 0 samples the softmax above;
* ``request_weight`` = 0.0: weight ``w`` of the in-flight request count (>= 0);
* ``lmetric`` = False: the LMetric product cost above.

The cost is in blocks, not seconds, so decisions carry no latency prediction.
"""

from __future__ import annotations

import numpy as np

from kvroute.params import flag, integer, number
from kvroute.routing.base import ClusterView, Decision, RouteRequest, RoutingPolicy
from kvroute.routing.registry import register

__all__ = ["Dynamo"]


@register
class Dynamo(RoutingPolicy):
    name = "dynamo"
    uses_index = True

    def __init__(self, seed: int = 0, *, prefill_scale: float = 1.0, block: int = 16,
                 temperature: float = 0.0, request_weight: float = 0.0,
                 lmetric: bool = False) -> None:
        super().__init__(seed)
        self.block = integer("dynamo", "block", block, low=1,
                             hint="(units per KV block; 16 by default, 512 for Mooncake "
                                  "traces)")
        self.prefill_scale = number("dynamo", "prefill_scale", prefill_scale, low=0.0)
        self.temperature = number("dynamo", "temperature", temperature, low=0.0)
        self.request_weight = number("dynamo", "request_weight", request_weight, low=0.0)
        self.lmetric = flag("dynamo", "lmetric", lmetric)

    def costs(self, req: RouteRequest, view: ClusterView) -> np.ndarray:
        """Every worker's cost for ``req`` (the quantity the policy minimises)."""
        ws = view.workers
        b = float(self.block)
        overlap = (view.matched(req) // self.block).astype(np.float64)
        prefill = np.array([w.prefill_units for w in ws], dtype=np.float64)
        decode = np.array([w.decode_units for w in ws], dtype=np.float64)
        requests = np.array([w.in_flight for w in ws], dtype=np.float64)
        own = float(-(-len(req) // self.block))
        adjusted = np.maximum(0.0, prefill / b + own - overlap)
        costs: np.ndarray
        if self.lmetric:
            costs = adjusted * (decode / b + 1.0)
        else:
            costs = (self.prefill_scale * adjusted + decode / b + own
                     + self.request_weight * requests)
        return costs

    def probabilities(self, costs: np.ndarray) -> np.ndarray:
        """The softmax over min-max normalised costs at this policy's temperature (> 0)."""
        lo, hi = float(costs.min()), float(costs.max())
        norm = (costs - lo) / (hi - lo) if hi > lo else np.zeros_like(costs)
        logits = -norm / self.temperature
        weights = np.exp(logits - logits.max())
        p: np.ndarray = weights / weights.sum()
        return p

    def route(self, req: RouteRequest, view: ClusterView) -> Decision:
        costs = self.costs(req, view)
        if self.temperature == 0.0:
            return Decision(view.argmin(costs), branch="argmin")
        allowed = view.candidates()
        p = self.probabilities(costs[allowed])
        return Decision(int(allowed[self.rng.choice(len(p), p=p)]), branch="softmax")
