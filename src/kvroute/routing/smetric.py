"""``smetric``: the vLLM router's ``smetric`` policy (2026; anchors.md, "Additions
(2026-12)"): uncached prefill priced by a linear plus attention cost, each worker's
prefill rate learned from its TTFTs, stay on the longest hit while it meets a TTFT SLO.

For a request of ``L`` prompt units and each allowed worker ``w``:

    n_w      = L - min(matched_w, L)                  units it must prefill
    work_w   = c_lin * n_w + c_att * n_w * (L - n_w / 2)
    queued_w = prefill_units_w * (open work on w / open units on w)
    s_w      = p90 of w's last ``window`` samples of seconds per unit of work
    ttft_w   = s_w * (queued_w + work_w)

``matched_w`` is the prefix the router's index believes ``w`` holds; ``prefill_units_w``
the prompt units routed to ``w`` with no first token yet (router-counted), converted to
work by the mean work per unit of this policy's requests still open on ``w`` (0 when it
has none). Decision: the longest-hit worker (ties: least queued seconds ``s_w *
queued_w``, then lowest index) if its hit is more than ``hit_fraction`` of the prompt and
``ttft_w <= ttft_slo_s`` -- branch ``"hit"``; otherwise the worker with the least queued
work in seconds, ``s_w * queued_w`` (ties: the lowest index) -- branch ``"least_work"``.
``Decision.predicted_s`` is the chosen worker's ``ttft_w``.

Learning: at each successful completion with a TTFT, the sample ``TTFT / (queued + work)``
(the queued work recorded at dispatch; the work recomputed from the engine's cached
tokens when it reports them) joins the worker's window. A worker with no sample yet uses
the p90 over every worker's samples, or ``prior_s_per_work`` before any.

Choices where the description is silent: "expected" in "hit > 0.5 x expected" is read as
the prompt length (a hit ratio above 0.5); the SLO (``ttft_slo_s``) is ours, 1 s; the
attention weight ``c_att`` is per token pair relative to ``c_lin`` per token, from a
Llama-3-8B's FLOPs (4 x 32 layers x 4096 per pair against 2 x 7e9 per token: 3.7e-5).

Parameters: ``c_lin`` 1.0, ``c_att`` 3.7e-5 (>= 0), ``window`` 64 samples, ``quantile``
0.9, ``hit_fraction`` 0.5, ``ttft_slo_s`` 1.0, ``prior_s_per_work`` 1e-4 (seconds per
unit of work before any sample, > 0); ``seed`` unused.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from kvroute.params import integer, number
from kvroute.routing.base import ClusterView, Decision, Feedback, RouteRequest, RoutingPolicy
from kvroute.routing.registry import register

__all__ = ["SMetric"]


@dataclass
class _Open:
    worker: int
    units: int
    work: float
    queued: float


@register
class SMetric(RoutingPolicy):
    name = "smetric"
    uses_index = True

    def __init__(self, seed: int = 0, *, c_lin: float = 1.0, c_att: float = 3.7e-5,
                 window: int = 64, quantile: float = 0.9, hit_fraction: float = 0.5,
                 ttft_slo_s: float = 1.0, prior_s_per_work: float = 1e-4) -> None:
        super().__init__(seed)
        self.c_lin: float = number("smetric", "c_lin", c_lin, low=0.0)
        self.c_att: float = number("smetric", "c_att", c_att, low=0.0)
        self.window: int = integer("smetric", "window", window, low=1)
        self.quantile: float = number("smetric", "quantile", quantile, low=0.0, high=1.0)
        self.hit_fraction: float = number("smetric", "hit_fraction", hit_fraction, low=0.0,
                                          high=1.0)
        self.ttft_slo_s: float = number("smetric", "ttft_slo_s", ttft_slo_s, low=0.0,
                                        low_open=True)
        self.prior_s_per_work: float = number("smetric", "prior_s_per_work", prior_s_per_work,
                                              low=0.0, low_open=True)
        self.samples: list[deque[float]] = []
        self.rate: np.ndarray = np.zeros(0)  # p90 of each worker's window, where it has one
        self.default_rate: float = self.prior_s_per_work  # p90 of all samples, or the prior
        self._default_stale: bool = False  # recomputed when a worker without samples needs it
        self.open_work: np.ndarray = np.zeros(0)
        self.open_units: np.ndarray = np.zeros(0)
        self.open: dict[int, _Open] = {}

    # ------------------------------------------------------------------ membership
    def _ensure(self, n: int) -> None:
        while len(self.samples) < n:
            self.samples.append(deque(maxlen=self.window))
        if len(self.open_work) < n:
            pad = np.zeros(n - len(self.open_work))
            self.rate = np.concatenate([self.rate, pad])
            self.open_work = np.concatenate([self.open_work, pad])
            self.open_units = np.concatenate([self.open_units, pad])

    def on_workers_changed(self, count: int) -> None:
        self._ensure(count)

    def on_worker_removed(self, index: int, count: int) -> None:
        self._ensure(index + 1)
        del self.samples[index]
        self.rate = np.delete(self.rate, index)
        self._default_stale = True
        self.open_work = np.delete(self.open_work, index)
        self.open_units = np.delete(self.open_units, index)
        for rec in self.open.values():
            if rec.worker > index:
                rec.worker -= 1
        self._ensure(count)

    # ------------------------------------------------------------------ the model
    def work(self, uncached: np.ndarray | float, length: float) -> np.ndarray:
        """Prefill work of ``uncached`` new units at the end of a ``length``-unit prompt."""
        n = np.asarray(uncached, dtype=np.float64)
        out: np.ndarray = self.c_lin * n + self.c_att * n * (length - n / 2.0)
        return out

    def rates(self, n: int) -> np.ndarray:
        """Seconds per unit of work for each of ``n`` workers (p90 of its window)."""
        self._ensure(n)
        has = np.array([len(q) > 0 for q in self.samples[:n]], dtype=bool)
        if self._default_stale and not has.all():
            self._refresh_default()
        out: np.ndarray = np.where(has, self.rate[:n], self.default_rate)
        return out

    def _refresh_default(self) -> None:
        pooled = np.array([x for q in self.samples for x in q], dtype=np.float64)
        self.default_rate = (float(np.quantile(pooled, self.quantile)) if len(pooled)
                             else self.prior_s_per_work)
        self._default_stale = False

    def predictions(self, req: RouteRequest, view: ClusterView
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(predicted TTFT, queued seconds, queued work, own work) per worker."""
        n = len(view)
        length = float(len(req))
        matched = np.minimum(view.matched(req).astype(np.float64), length)
        own = self.work(length - matched, length)
        rate = self.rates(n)
        prefill = np.fromiter((w.prefill_units for w in view.workers), np.float64, n)
        per_unit = np.divide(self.open_work[:n], self.open_units[:n], out=np.zeros(n),
                             where=self.open_units[:n] > 0)
        queued = prefill * per_unit
        return rate * (queued + own), rate * queued, queued, own

    # ------------------------------------------------------------------ the decision
    def route(self, req: RouteRequest, view: ClusterView) -> Decision:
        ttft, wait, queued, own = self.predictions(req, view)
        allowed = view.candidates()
        matched = view.matched(req)
        order = np.lexsort((allowed, wait[allowed], -matched[allowed]))  # last key primary
        best = int(allowed[order[0]])
        if matched[best] > self.hit_fraction * len(req) and ttft[best] <= self.ttft_slo_s:
            w, branch = best, "hit"
        else:
            w, branch = view.argmin(wait), "least_work"
        self.open[req.rid] = _Open(w, len(req), float(own[w]), float(queued[w]))
        self.open_work[w] += own[w]
        self.open_units[w] += len(req)
        return Decision(w, branch=branch, predicted_s=float(ttft[w]))

    # ------------------------------------------------------------------ learning
    def on_complete(self, fb: Feedback) -> None:
        rec = self.open.pop(fb.rid, None)
        if rec is None:
            return
        w = rec.worker
        if w < len(self.open_work):
            self.open_work[w] = max(0.0, self.open_work[w] - rec.work)
            self.open_units[w] = max(0.0, self.open_units[w] - rec.units)
            if self.open_units[w] <= 0:
                self.open_work[w] = self.open_units[w] = 0.0
        if not fb.ok or fb.ttft_s is None or w >= len(self.samples):
            return
        work = rec.work
        if fb.cached_units is not None:
            cached = float(min(fb.cached_units, rec.units))
            work = float(self.work(rec.units - cached, rec.units))
        total = rec.queued + work
        if total > 0:
            self.samples[w].append(fb.ttft_s / total)
            window = np.array(self.samples[w], dtype=np.float64)
            self.rate[w] = float(np.quantile(window, self.quantile))
            self._default_stale = True

    def telemetry(self) -> dict[str, object]:
        """Each worker's current seconds per unit of work."""
        return {"s_per_work": self.rates(len(self.samples)).tolist()}
