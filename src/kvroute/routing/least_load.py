"""``least_load``: SGLang router ("SMG") least-load, the time to clear a worker's work.

For each worker i, with ``P`` the prompt length in units::

    queued_i    = (P - matched_i) + prefill_units_i     # queued uncached tokens
    in_flight_i = decode_units_i                         # in-flight tokens
    k_i         = min(max(kv_usage_i, 0), kv_clamp)
    cost_i      = (queued_i + in_flight_i) / rate_i + kv_penalty_s * k_i / (1 - k_i)

and the request goes to the allowed worker of least cost (ties to the lowest index); the
decision carries
``predicted_s`` = the chosen worker's cost, in seconds.

SMG reads queue and throughput from its engines; here they come from what a router knows:

* queued uncached tokens: this prompt's units not in the router's prefix index for i
  (``len(req) - view.matched(req)[i]``) plus ``WorkerState.prefill_units`` (prompt units
  of requests routed to i with no first token yet; whole prompts, since the router does
  not keep what each of them matched);
* in-flight tokens: ``WorkerState.decode_units`` (prompt units of requests past their first
  token, whose KV the worker holds while it decodes);
* k: the engine-reported ``WorkerState.kv_usage`` (stale in the live router);
* rate_i, the throughput in tokens per second: learned online per worker from
  ``on_complete``. Each successful request with ``e2e_s > 0`` and ``prompt_units > 0``
  gives an observation ``prompt_units / e2e_s`` and ``rate_i <- (1 - ewma_alpha) * rate_i
  + ewma_alpha * observation``, starting from ``prior_tokens_per_s``. Failed requests
  teach nothing. The observation includes queueing and decode time, so it is an effective
  (load-dependent) rate: a busy worker looks slower, which makes the rule more averse to
  load than a pure capacity estimate would be. It is floored at ``min_tokens_per_s``.

Parameters (published defaults where SMG has one):

* ``kv_penalty_s`` = 0.15 s: scale of the KV-utilisation term (SMG's), >= 0;
* ``kv_clamp`` = 0.999: utilisation is clamped there so the term stays finite (SMG's),
  in [0, 1);
* ``prior_tokens_per_s`` = 10,000: throughput assumed before any feedback (ours), > 0;
* ``ewma_alpha`` = 0.1: weight of each new throughput observation (ours), in (0, 1];
* ``min_tokens_per_s`` = 1.0: floor on the learned throughput (ours), > 0.

Membership changes drop a removed worker's learned rate (``on_worker_removed``) and
extend the rates for new workers, which start at the prior; a worker the view shows but
the policy has not seen yet also starts at the prior.
"""

from __future__ import annotations

import math

import numpy as np

from kvroute.params import number
from kvroute.routing.base import ClusterView, Decision, Feedback, RouteRequest, RoutingPolicy
from kvroute.routing.registry import register

__all__ = ["LeastLoad"]


@register
class LeastLoad(RoutingPolicy):
    name = "least_load"
    uses_index = True

    def __init__(self, seed: int = 0, *, kv_penalty_s: float = 0.15, kv_clamp: float = 0.999,
                 prior_tokens_per_s: float = 10_000.0, ewma_alpha: float = 0.1,
                 min_tokens_per_s: float = 1.0) -> None:
        super().__init__(seed)
        self.kv_penalty_s = number("least_load", "kv_penalty_s", kv_penalty_s, low=0.0,
                                   hint="(seconds)")
        self.kv_clamp = number("least_load", "kv_clamp", kv_clamp, low=0.0, high=1.0,
                               high_open=True)
        self.min_tokens_per_s = number("least_load", "min_tokens_per_s", min_tokens_per_s,
                                       low=0.0, low_open=True, hint="(tokens/s)")
        self.prior_tokens_per_s = number("least_load", "prior_tokens_per_s",
                                         prior_tokens_per_s, low=self.min_tokens_per_s,
                                         hint="(tokens/s; at least min_tokens_per_s)")
        self.ewma_alpha = number("least_load", "ewma_alpha", ewma_alpha, low=0.0, high=1.0,
                                 low_open=True)
        self._rate: list[float] = []

    @property
    def rates(self) -> np.ndarray:
        """The learned throughput per worker seen so far, tokens per second."""
        return np.array(self._rate, dtype=np.float64)

    def _grow(self, count: int) -> None:
        if len(self._rate) < count:
            self._rate.extend([self.prior_tokens_per_s] * (count - len(self._rate)))

    def costs(self, req: RouteRequest, view: ClusterView) -> np.ndarray:
        """Every worker's cost for ``req`` in seconds (the quantity the policy minimises)."""
        ws = view.workers
        self._grow(len(ws))
        uncached = np.maximum(0, len(req) - view.matched(req)).astype(np.float64)
        prefill = np.array([w.prefill_units for w in ws], dtype=np.float64)
        decode = np.array([w.decode_units for w in ws], dtype=np.float64)
        rate = np.array(self._rate[:len(ws)], dtype=np.float64)
        k = np.clip(np.array([w.kv_usage for w in ws], dtype=np.float64), 0.0, self.kv_clamp)
        costs: np.ndarray = ((uncached + prefill + decode) / rate
                             + self.kv_penalty_s * k / (1.0 - k))
        return costs

    def route(self, req: RouteRequest, view: ClusterView) -> Decision:
        costs = self.costs(req, view)
        worker = view.argmin(costs)
        return Decision(worker, branch="argmin", predicted_s=float(costs[worker]))

    def on_complete(self, fb: Feedback) -> None:
        if not fb.ok or fb.e2e_s is None or not math.isfinite(fb.e2e_s) or fb.e2e_s <= 0 \
                or fb.prompt_units <= 0 or fb.worker < 0:
            return
        self._grow(fb.worker + 1)
        observed = fb.prompt_units / fb.e2e_s
        rate = (1.0 - self.ewma_alpha) * self._rate[fb.worker] + self.ewma_alpha * observed
        self._rate[fb.worker] = max(self.min_tokens_per_s, rate)

    def on_workers_changed(self, count: int) -> None:
        del self._rate[count:]
        self._grow(count)

    def on_worker_removed(self, index: int, count: int) -> None:
        if index < len(self._rate):
            del self._rate[index]
        self.on_workers_changed(count)
