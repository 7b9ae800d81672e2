"""``llmd``: llm-d's default scorer profile, a weighted sum of queue, KV-free and prefix scores.

For each worker i, with ``P`` the prompt length in units and ``b`` the block size::

    queue_score_i  = (maxQ - q_i) / (maxQ - minQ)     (1 for every worker if maxQ == minQ)
    kv_score_i     = 1 - kv_usage_i
    prefix_score_i = (matched_i // b) / ceil(P / b)    (0 for an empty prompt)
    score_i = queue_weight * queue_score_i + kv_weight * kv_score_i
              + prefix_weight * prefix_score_i

and the request goes to ``argmax score``; workers tied at the maximum (within 1e-12) are
drawn uniformly from the policy's seeded generator. Only allowed workers are scored
against each other: ``minQ``, ``maxQ``, the maximum and the ties are taken over them.
``q_i`` is the engine-reported ``WorkerState.waiting`` (queued, not yet running),
``kv_usage_i`` the engine-reported fraction of the KV pool in use (clipped to [0, 1]);
both may be stale in the live router. ``matched_i`` is the prefix of this prompt the
router's prefix index believes i holds, counted in whole blocks like llm-d's block-hash
prefix scorer.

Parameters (published defaults):

* ``queue_weight`` = 2.0, ``kv_weight`` = 2.0, ``prefix_weight`` = 3.0 (each >= 0);
* ``block`` = 16 units per KV block (vLLM's default block size).

Scores are unitless: decisions carry no latency prediction.
"""

from __future__ import annotations

import numpy as np

from kvroute.params import integer, number
from kvroute.routing.base import ClusterView, Decision, RouteRequest, RoutingPolicy
from kvroute.routing.registry import register

__all__ = ["LlmD"]

TIE_TOLERANCE = 1e-12


@register
class LlmD(RoutingPolicy):
    name = "llmd"
    uses_index = True

    def __init__(self, seed: int = 0, *, queue_weight: float = 2.0, kv_weight: float = 2.0,
                 prefix_weight: float = 3.0, block: int = 16) -> None:
        super().__init__(seed)
        self.block = integer("llmd", "block", block, low=1,
                             hint="(units per KV block; 16 by default)")
        self.queue_weight = number("llmd", "queue_weight", queue_weight, low=0.0)
        self.kv_weight = number("llmd", "kv_weight", kv_weight, low=0.0)
        self.prefix_weight = number("llmd", "prefix_weight", prefix_weight, low=0.0)

    def components(self, req: RouteRequest, view: ClusterView,
                   among: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The three per-worker scores (queue, KV-free, prefix), each in [0, 1] for the
        workers ``among`` (default: the allowed ones)."""
        ws = view.workers
        q = np.array([w.waiting for w in ws], dtype=np.float64)
        allowed = q[view.candidates() if among is None else among]
        lo, hi = float(allowed.min()), float(allowed.max())
        queue = (hi - q) / (hi - lo) if hi > lo else np.ones_like(q)
        kv = 1.0 - np.clip(np.array([w.kv_usage for w in ws], dtype=np.float64), 0.0, 1.0)
        total_blocks = -(-len(req) // self.block)
        if total_blocks == 0:
            prefix = np.zeros_like(q)
        else:
            prefix = (view.matched(req) // self.block).astype(np.float64) / total_blocks
        return queue, kv, prefix

    def scores(self, req: RouteRequest, view: ClusterView,
               among: np.ndarray | None = None) -> np.ndarray:
        """Every worker's weighted score for ``req`` (the quantity the policy maximises)."""
        queue, kv, prefix = self.components(req, view, among)
        return self.queue_weight * queue + self.kv_weight * kv + self.prefix_weight * prefix

    def route(self, req: RouteRequest, view: ClusterView) -> Decision:
        return self.pick(req, view, view.candidates())

    def pick(self, req: RouteRequest, view: ClusterView, allowed: np.ndarray) -> Decision:
        """The best-scored of the workers ``allowed`` (scored against each other)."""
        scores = self.scores(req, view, allowed)
        top = scores[allowed]
        best = allowed[top >= top.max() - TIE_TOLERANCE]
        if len(best) == 1:
            return Decision(int(best[0]), branch="argmax")
        return Decision(int(best[self.rng.integers(len(best))]), branch="tie")
