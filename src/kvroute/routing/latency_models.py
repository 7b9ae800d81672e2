"""``LatencyModels``: the latency models of ``learned`` (:mod:`~kvroute.routing.learned`,
whose module doc defines the features ``x_ttft``, ``x_dec`` and the output ``O``) and how
a completion teaches them. All from completions; errors teach nothing.

* ``a`` (``ttft_model``): recursive least squares with forgetting ``forget`` on
  ``x_ttft``, target the observed TTFT; coefficients clipped at >= 0, then the intercept
  refitted to the clipped slopes (:mod:`~kvroute.routing.online_regression`): where the
  decode model's batch and context features move together (overload) clipping alone
  over-predicts E2E, and the refit moves only the level, the same on every worker of
  one speed. The caller recomputes ``x_ttft`` from the engine's cached tokens when it
  reports them (what was really prefilled). A request whose TTFT was predicted with a
  wait for room teaches it nothing (nor the slowness, nor the cached units read from
  its TTFT): the wait is not the model's.
* ``d`` (``decode_model``, per-token decode time): the same on ``x_dec``, target
  ``(E2E - TTFT) / (O - 1)`` when O > 1 (``O`` as reported, else ``max_tokens``). Its
  context feature's prior is 0: no context effect until one is observed. A streamed
  completion without a known output (or with one token) moves ``decode_mean`` instead,
  its decode seconds averaged with weight ``1 - forget``.
* The reported E2E (``decode_report``). The decode model decides well and predicts
  badly: every request weighs the same in its fit, so a short output that a long prefill
  stalled (a large time per token) is multiplied by the output of long requests, and at
  a cold start under overload the context slope shoots up. Fits that predict better
  decided worse (docs/routing-results.md). So ``decode_report``, fitted beside it on the
  same samples, each weighted by its output tokens - 1 and with a ridge of 1 pulling the
  context slope towards its prior 0 where the data leave it undetermined, gives the
  chosen worker's decode time in ``Decision.predicted_s`` and the E2E error telemetry,
  and nothing else: every decision is as without it.
* ``s`` (``slow``, each worker's slowness, :class:`~kvroute.routing.worker_speed.
  Slowness`): replicas may be of different speeds, and one model for all predicts the
  same time everywhere. It is read from the TTFT residuals of the requests that found
  nothing queued ahead, where the decode residuals agree; else ``s_w = 1``, so equal
  workers keep ``s = 1`` and a caller's ties between them survive. The decode models
  learn times at the typical worker's speed (their targets are divided by ``s_w``).
* Requests that do not stream (no TTFT): a completion teaches one regression of the E2E
  on ``[x_ttft, (O - 1) x_dec]`` (``e2e_model``; ``O - 1`` taken as 1 with no output
  known). While completions come and none has a TTFT (:attr:`completions_only`),
  ``a`` and ``d`` are that regression's two halves (:meth:`coefficients`); the first TTFT
  switches back for good (docs/routing-results.md, "Clients that do not stream").
* Cached units read backwards: without a cached-token report, a request that found
  nothing queued ahead took its own prefill as its TTFT (or its E2E less the predicted
  decode, unstreamed), so the model before the update read backwards
  (:mod:`~kvroute.routing.ttft_form`) gives what was cached: :meth:`learn` returns it
  for the caller's hit realisation.

``prior_ktoken_s`` (seconds per 1000 prefill units) sets every prior. Mechanism only: which
request is a sample is the caller's business.
"""

from __future__ import annotations

import math

import numpy as np

from kvroute.routing.online_regression import OnlineRegression
from kvroute.routing.ttft_form import cached_from_ttft
from kvroute.routing.worker_speed import Slowness

__all__ = ["LatencyModels"]

Features = tuple[float, float, float]


class LatencyModels:
    def __init__(self, forget: float, prior_ktoken_s: float) -> None:
        k = prior_ktoken_s
        self.forget = forget
        # TTFT: s per 1000 units, s per 1e6 pairs, s fixed; decode: s per token, s per token
        # per request in flight, s per token per 1e5 units of context in flight
        self.ttft_model = OnlineRegression([k, k / 20.0, k / 10.0], lam=forget, intercept=2)
        self.decode_model = OnlineRegression([k / 5.0, k / 100.0, 0.0], lam=forget,
                                             intercept=0)
        # weighted by the output, a ridge on the context: "The reported E2E" above
        self.decode_report = OnlineRegression([k / 5.0, k / 100.0, 0.0], lam=forget,
                                              intercept=0, ridge=(0.0, 0.0, 1.0))
        self.e2e_model = OnlineRegression([k, k / 20.0, k / 10.0, k / 5.0, k / 100.0, 0.0],
                                          lam=forget, intercept=2)
        self.decode_mean = k / 2.0  # observed decode seconds, when O is unknown
        self.slow = Slowness(forget)

    @property
    def completions_only(self) -> bool:
        """Completions have come and none with a TTFT (the module doc)."""
        return self.ttft_model.samples == 0 and self.e2e_model.samples > 0

    def coefficients(self) -> tuple[float, ...]:
        """``(a0, a1, a2, d0, d1, d2)``: the TTFT and decode models', or the E2E
        regression's two halves while :attr:`completions_only`."""
        if self.completions_only:
            return tuple(self.e2e_model.coefficient_list())
        return (*self.ttft_model.coefficient_list(), *self.decode_model.coefficient_list())

    def learn(self, w: int, x: Features, x_dec: Features, out: int | None,
              ttft_s: float | None, e2e_s: float, *, units: int, unknown_hit: bool,
              alone: bool, waited: bool) -> float | None:
        """A completion on worker ``w`` of a request of ``units`` prompt units with these
        features (``out``: its output tokens as reported, else ``max_tokens``, else None;
        ``ttft_s`` None: not streamed). ``unknown_hit``: a prefix was matched and no cached
        tokens were reported; ``alone``: nothing was queued ahead of it; ``waited``: its
        TTFT was predicted with a wait for room. Returns the cached units read backwards
        (where ``unknown_hit`` and ``alone``, and not ``waited``), else None."""
        cached = None
        if ttft_s is None:
            if out is None or out > 1:
                o = 1 if out is None else out - 1  # unknown output: decode seconds
                if unknown_hit and alone:  # the model before the update
                    c = self.e2e_model.coefficient_list()
                    ttft = e2e_s - o * (c[3] * x_dec[0] + c[4] * x_dec[1] + c[5] * x_dec[2])
                    cached = cached_from_ttft(c[:3], units, ttft)
                self.e2e_model.update(np.array([*x, *(o * v for v in x_dec)]), e2e_s)
            return cached
        x_ttft, x_d = np.array(x), np.array(x_dec)
        if not waited:  # a wait for room is not the TTFT model's to learn
            if unknown_hit and alone:  # the model before the update
                cached = cached_from_ttft(self.ttft_model.coefficient_list(), units, ttft_s)
            if alone:
                self.slow.ttft.update(w, ttft_s, self.ttft_model.predict(x_ttft))
            self.ttft_model.update(x_ttft, ttft_s)
        decode_s = max(0.0, e2e_s - ttft_s)
        s_w = self.slow.factor(w)  # the decode models learn the typical worker's times
        if out is not None and out > 1:
            per_token = decode_s / (out - 1)
            self.slow.decode.update(w, per_token, self.decode_model.predict(x_d))
            self.decode_model.update(x_d, per_token / s_w)
            root = math.sqrt(out - 1)  # a sample of weight out - 1
            self.decode_report.update(x_d * root, per_token / s_w * root)
        else:
            self.slow.decode.update(w, decode_s, self.decode_mean)
            self.decode_mean += (1.0 - self.forget) * (decode_s / s_w - self.decode_mean)
        return cached

    def telemetry(self) -> dict[str, object]:
        """The coefficients, the mode, and how often a model's ``P`` was reset
        (``model_resets``: the regression's guard for long runs)."""
        return {"ttft_coefficients": list(self.ttft_model.coefficient_list()),
                "decode_coefficients": list(self.decode_model.coefficient_list()),
                "reported_decode_coefficients": list(self.decode_report.coefficient_list()),
                "completions_only": int(self.completions_only),  # 1: the mode is on
                "e2e_coefficients": list(self.e2e_model.coefficient_list()),
                "model_resets": sum(m.resets for m in (
                    self.ttft_model, self.decode_model, self.decode_report, self.e2e_model))}
