"""``llmd_predicted``: llm-d's scheduler profile with its latency predictor on (2026;
anchors.md, "Additions (2026-12)").

Per allowed worker ``w``, the predictor gives a TTFT and a TPOT (below); then, in order:

1. **prefix-affinity filter at 0.99**: keep the workers whose prefix score (as ``llmd``:
   whole matched blocks over the prompt's blocks) is >= 0.99;
2. **SLO-headroom tier filter**: keep the workers with positive headroom on both SLOs
   (``ttft_slo_s - TTFT > 0`` and ``tpot_slo_s - TPOT > 0``) if there are any (the
   positive tier), else all (the negative tier);
3. **prefix-affinity filter at 0.80**, as in 1;
4. **latency scorer**: blended headroom in seconds ``h_w = 0.8 (ttft_slo_s - TTFT_w) +
   0.2 (tpot_slo_s - TPOT_w)``, scored over the remaining workers ``0.01 + 0.99 (max h -
   h_w) / (max h - min h)`` in the positive tier with the ``least`` strategy (llm-d's
   default: the least positive headroom, packing), ``0.01 + 0.99 (h_w - min h) / (max h -
   min h)`` with ``most`` and in the negative tier (the least violation); 1 for all when
   equal;
5. **weighted-random pick**: each remaining worker draws ``U^(1/score)`` (U uniform from
   the policy's seeded generator) and the largest key wins -- branch ``"predicted"``.

An affinity filter keeps everything when no worker or every worker reaches the threshold,
is skipped with probability 0.01 (a draw from the seeded generator), and is broken (keeps
everything) when the best kept worker's predicted TTFT is more than 5 s above the best
of the others.

**The predictor.** llm-d trains XGBoost in a sidecar on its features; here two online
least-squares models (:class:`~kvroute.routing.online_regression.OnlineRegression`,
forgetting ``forget``, no sign constraint) on the same features stand in, as the brief
allows. Features of worker ``w`` for a request of ``L`` units: 1, KV usage (engine
report), ``L / 1000``, waiting and running (engine reports), prefix score, prefill and
decode units in flight / 1000 (router-counted), and for TTFT the uncached estimate
``L (1 - prefix score) / 1000`` (a linear model needs this product, a tree ensemble finds
it itself). "Tokens generated" is 0 for a request not yet running, so it is left out.
Targets: the observed TTFT, and the TPOT ``(E2E - TTFT) / (max_tokens - 1)`` when
``max_tokens > 1``; each sample carries the chosen worker's features at dispatch. As in
llm-d, decisions use a snapshot of the models retrained every ``retrain_s`` (10 s of the
view's clock) once ``min_samples`` (100) completions were learned from; before that the
policy routes as ``llmd``'s default profile (queue 2, KV 2, prefix 3; random tie-break)
-- branch ``"warmup"``.

SLOs: llm-d reads them from request headers and, without them, takes SLO = 0, so every
worker is in the negative tier and the pick favours the lowest predicted latency; kvroute's
requests carry no SLO, so both default to 0 (set them to route as with headers). The
normalisation of step 4 is kvroute's choice; llm-d's sidecar predicts p90 latencies, the
stand-in the mean. Not modelled: the load-aware, no-hit LRU and session-affinity scorers
(not in this profile).

Parameters: ``ttft_slo_s`` 0, ``tpot_slo_s`` 0 (>= 0; 0: none), ``strategy`` "least" (or
"most"), ``block`` 16, ``forget`` 0.998 (in (0, 1]), ``retrain_s`` 10.0, ``min_samples``
100; ``seed`` seeds the draws.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from kvroute.errors import ConfigError
from kvroute.params import integer, number
from kvroute.routing.base import ClusterView, Decision, Feedback, RouteRequest, RoutingPolicy
from kvroute.routing.llmd import LlmD
from kvroute.routing.online_regression import OnlineRegression
from kvroute.routing.registry import register

__all__ = ["LlmDPredicted"]

AFFINITY_STRICT = 0.99
AFFINITY_LOOSE = 0.80
AFFINITY_SKIP = 0.01  # probability an affinity filter is skipped
AFFINITY_BREAK_S = 5.0  # TTFT penalty above which affinity is broken
TTFT_SHARE = 0.8  # the latency scorer's blend: 0.8 TTFT + 0.2 TPOT
MIN_SCORE = 0.01


@dataclass
class _Open:
    x_ttft: np.ndarray
    x_tpot: np.ndarray
    out: int | None


@register
class LlmDPredicted(RoutingPolicy):
    name = "llmd_predicted"
    uses_index = True

    def __init__(self, seed: int = 0, *, ttft_slo_s: float = 0.0, tpot_slo_s: float = 0.0,
                 strategy: str = "least",
                 block: int = 16, forget: float = 0.998, retrain_s: float = 10.0,
                 min_samples: int = 100) -> None:
        super().__init__(seed)
        self.ttft_slo_s: float = number("llmd_predicted", "ttft_slo_s", ttft_slo_s, low=0.0)
        self.tpot_slo_s: float = number("llmd_predicted", "tpot_slo_s", tpot_slo_s, low=0.0)
        self.retrain_s: float = number("llmd_predicted", "retrain_s", retrain_s, low=0.0,
                                       low_open=True)
        if strategy not in ("least", "most"):
            raise ConfigError(f"llmd_predicted: strategy must be 'least' or 'most', "
                              f"got {strategy!r}")
        self.strategy = strategy
        lam = number("llmd_predicted", "forget", forget, low=0.0, high=1.0, low_open=True)
        self.min_samples: int = integer("llmd_predicted", "min_samples", min_samples, low=1)
        self.default: LlmD = LlmD(seed, block=block)  # the warm-up profile (block validated there)
        self.default.rng = self.rng  # one generator for every draw
        self.block: int = self.default.block
        free = -math.inf  # no sign constraint on any coefficient
        self.ttft_model: OnlineRegression = OnlineRegression([0.0] * 9, lam=lam, floor=free)
        self.tpot_model: OnlineRegression = OnlineRegression([0.0] * 8, lam=lam, floor=free)
        self.ttft_coef: np.ndarray | None = None  # the snapshot decisions use
        self.tpot_coef: np.ndarray | None = None
        self.trained_at: float = -math.inf
        self.open: dict[int, _Open] = {}

    # ------------------------------------------------------------------ the predictor
    def features(self, req: RouteRequest, view: ClusterView
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(prefix score per worker, TTFT features, TPOT features), one row per worker."""
        ws = view.workers
        n = len(ws)
        length = float(len(req))
        total_blocks = -(-len(req) // self.block)
        prefix = ((view.matched(req) // self.block).astype(np.float64) / total_blocks
                  if total_blocks else np.zeros(n))
        kv = np.clip(np.fromiter((w.kv_usage for w in ws), np.float64, n), 0.0, 1.0)
        waiting = np.fromiter((w.waiting for w in ws), np.float64, n)
        running = np.fromiter((w.running for w in ws), np.float64, n)
        prefill = np.fromiter((w.prefill_units for w in ws), np.float64, n) / 1000.0
        decode = np.fromiter((w.decode_units for w in ws), np.float64, n) / 1000.0
        ones = np.ones(n)
        size = np.full(n, length / 1000.0)
        tpot = np.column_stack([ones, kv, size, waiting, running, prefix, prefill, decode])
        ttft = np.column_stack([tpot, size * (1.0 - prefix)])
        return prefix, ttft, tpot

    def _retrain(self, now: float) -> None:
        if self.ttft_model.samples >= self.min_samples \
                and now - self.trained_at >= self.retrain_s:
            self.ttft_coef = self.ttft_model.coefficients().copy()
            self.tpot_coef = self.tpot_model.coefficients().copy()
            self.trained_at = now

    # ------------------------------------------------------------------ the pipeline
    def _affinity(self, keep: np.ndarray, prefix: np.ndarray, ttft: np.ndarray,
                  threshold: float) -> np.ndarray:
        sticky: np.ndarray = keep[prefix[keep] >= threshold]
        if len(sticky) == 0 or len(sticky) == len(keep):
            return keep
        if self.rng.random() < AFFINITY_SKIP:
            return keep
        others = keep[prefix[keep] < threshold]
        if ttft[sticky].min() > ttft[others].min() + AFFINITY_BREAK_S:
            return keep
        return sticky

    def scores(self, ttft: np.ndarray, tpot: np.ndarray, keep: np.ndarray,
               positive: bool) -> np.ndarray:
        """The latency scorer's score for each worker of ``keep`` (in that order), in the
        positive tier or not."""
        h = (TTFT_SHARE * (self.ttft_slo_s - ttft[keep])
             + (1.0 - TTFT_SHARE) * (self.tpot_slo_s - tpot[keep]))
        lo, hi = float(h.min()), float(h.max())
        if hi <= lo:
            ones: np.ndarray = np.ones(len(keep))
            return ones
        rel = (hi - h if positive and self.strategy == "least" else h - lo) / (hi - lo)
        out: np.ndarray = MIN_SCORE + (1.0 - MIN_SCORE) * rel
        return out

    def route(self, req: RouteRequest, view: ClusterView) -> Decision:
        self._retrain(view.now)
        prefix, x_ttft, x_tpot = self.features(req, view)
        if self.ttft_coef is None or self.tpot_coef is None:
            d = self.default.route(req, view)
            w, branch, predicted = d.worker, "warmup", None
        else:
            ttft = np.maximum(0.0, x_ttft @ self.ttft_coef)
            tpot = np.maximum(0.0, x_tpot @ self.tpot_coef)
            keep = self._affinity(view.candidates(), prefix, ttft, AFFINITY_STRICT)
            ok = keep[(ttft[keep] < self.ttft_slo_s) & (tpot[keep] < self.tpot_slo_s)]
            if len(ok):
                keep = ok
            keep = self._affinity(keep, prefix, ttft, AFFINITY_LOOSE)
            score = self.scores(ttft, tpot, keep, positive=len(ok) > 0)
            keys = self.rng.random(len(keep)) ** (1.0 / score)
            w, branch = int(keep[int(np.argmax(keys))]), "predicted"
            out = req.max_tokens if req.max_tokens is not None else 1
            predicted = float(ttft[w] + max(out - 1, 0) * tpot[w])
        self.open[req.rid] = _Open(x_ttft[w].copy(), x_tpot[w].copy(), req.max_tokens)
        return Decision(w, branch=branch, predicted_s=predicted)

    # ------------------------------------------------------------------ learning
    def on_complete(self, fb: Feedback) -> None:
        rec = self.open.pop(fb.rid, None)
        if rec is None or not fb.ok or fb.ttft_s is None:
            return
        self.ttft_model.update(rec.x_ttft, fb.ttft_s)
        if rec.out is not None and rec.out > 1 and fb.e2e_s is not None:
            self.tpot_model.update(rec.x_tpot, max(0.0, fb.e2e_s - fb.ttft_s) / (rec.out - 1))

    def telemetry(self) -> dict[str, object]:
        """Samples learned from and the coefficients decisions use (None in warm-up)."""
        return {"samples": self.ttft_model.samples,
                "ttft_coefficients": None if self.ttft_coef is None
                else self.ttft_coef.tolist(),
                "tpot_coefficients": None if self.tpot_coef is None
                else self.tpot_coef.tolist()}
