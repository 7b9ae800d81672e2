"""``ttft_aware``: the vLLM router's TTFT-aware policy (2026; anchors.md, "Additions
(2026-12)"), a cache-blind predicted TTFT.

For each allowed worker ``w``, with ``pending_w`` its requests in flight (router-counted)
and ``P`` the prompt length in units::

    ttft_w = 0.6 * (pending_w * 0.1 s) + 0.4 * (P / units_per_token * 0.5 ms)

and the request goes to ``argmin ttft`` (ties: the lowest index), reported as
``Decision.predicted_s``. The prompt term is the same on every worker, so the choice is
the least pending worker (as ``least_request``); what differs is the prediction. The
vLLM router counts characters (4 per token); kvroute's units are tokens in the simulator
and with a tokenizer, characters otherwise, hence ``units_per_token`` (4, the vLLM
router's; it changes only the prediction, never the choice).

Parameters (the published constants): ``queue_weight`` 0.6, ``pending_s`` 0.1 (seconds per
pending request), ``length_weight`` 0.4, ``token_s`` 0.0005 (seconds per prompt token),
``units_per_token`` 4.0 (> 0); all finite and >= 0. ``seed`` unused.
"""

from __future__ import annotations

import numpy as np

from kvroute.params import number
from kvroute.routing.base import ClusterView, Decision, RouteRequest, RoutingPolicy
from kvroute.routing.registry import register

__all__ = ["TtftAware"]


@register
class TtftAware(RoutingPolicy):
    name = "ttft_aware"

    def __init__(self, seed: int = 0, *, queue_weight: float = 0.6, pending_s: float = 0.1,
                 length_weight: float = 0.4, token_s: float = 0.0005,
                 units_per_token: float = 4.0) -> None:
        super().__init__(seed)
        self.queue_weight = number("ttft_aware", "queue_weight", queue_weight, low=0.0)
        self.pending_s = number("ttft_aware", "pending_s", pending_s, low=0.0)
        self.length_weight = number("ttft_aware", "length_weight", length_weight, low=0.0)
        self.token_s = number("ttft_aware", "token_s", token_s, low=0.0)
        self.units_per_token = number("ttft_aware", "units_per_token", units_per_token,
                                      low=0.0, low_open=True)

    def predictions(self, req: RouteRequest, view: ClusterView) -> np.ndarray:
        """Every worker's predicted TTFT in seconds."""
        pending = view.in_flight().astype(np.float64)
        length = len(req) / self.units_per_token * self.token_s
        out: np.ndarray = (self.queue_weight * pending * self.pending_s
                           + self.length_weight * length)
        return out

    def route(self, req: RouteRequest, view: ClusterView) -> Decision:
        ttft = self.predictions(req, view)
        w = view.argmin(ttft)
        return Decision(w, branch="min_ttft", predicted_s=float(ttft[w]))
