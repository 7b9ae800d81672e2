"""``lbgr``: Learning-Based Greedy Routing, as the paper's implementation does it (paper.md 6.2).

For a prompt of T units and each worker i (units are token ids by default, characters in
the live router's character mode, which is what the paper used):

    c_i  = units of the prompt's prefix in the router's index for worker i
    u_i  = T - c_i
    base = max(1, a0 + a_hit * c_i + a_miss * u_i)        # defaults 0, 0, 1 "ms" per unit
    pred = max(1, base + q_weight * Q_i + theta_i)        # q_weight 1
    route to argmin pred, scanning the allowed workers in index order: a later worker
    replaces the current best only if it is better by more than ``tolerance`` (1.0);
    ties: lowest index
    Q_best += round(base)

* Queue load Q decays every ``decay_period`` (20 ms of the clock it is given):
  ``Q <- floor(Q * 31/32)``, on ticks at multiples of the period since time 0. On
  completion or error the request's decayed reservation
  ``round(base * (31/32)^ticks since it was routed)`` is subtracted (Q never below 0).
* Learning, per worker: on a successful completion with end-to-end latency y (ms), the
  residual target is ``max(1, y - (base + Q_i at routing))``; recursive least squares on a
  single bias feature with forgetting ``forgetting`` (0.992) and ``p0`` (1e6) gives
  theta_i (an exponentially weighted mean of residuals). Errors give no update.

The prediction is in the paper's "ms" (1 per uncached unit plus learned terms) and is
reported as ``Decision.predicted_s`` in seconds. Known weak spots, kept for fidelity:
no decode term, a residual clamped at >= 1, fixed decay constants (paper.md 9).
"""

from __future__ import annotations

import math

from kvroute.params import number
from kvroute.routing.base import ClusterView, Decision, Feedback, RouteRequest, RoutingPolicy
from kvroute.routing.registry import register

__all__ = ["LBGR"]

_DECAY = 31 / 32


@register
class LBGR(RoutingPolicy):
    name = "lbgr"
    uses_index = True

    def __init__(self, seed: int = 0, *, a0: float = 0.0, a_hit: float = 0.0,
                 a_miss: float = 1.0, q_weight: float = 1.0, tolerance: float = 1.0,
                 decay_period: float = 0.020, forgetting: float = 0.992,
                 p0: float = 1e6) -> None:
        super().__init__(seed)
        self.decay_period = number("lbgr", "decay_period", decay_period, low=0.0,
                                   low_open=True, hint="(seconds)")
        self.forgetting = number("lbgr", "forgetting", forgetting, low=0.0, high=1.0,
                                 low_open=True)
        self.p0 = number("lbgr", "p0", p0, low=0.0, low_open=True)
        self.tolerance = number("lbgr", "tolerance", tolerance, low=0.0)
        self.a0, self.a_hit, self.a_miss = a0, a_hit, a_miss
        self.q_weight = q_weight
        self.queue: list[int] = []
        self.theta: list[float] = []
        self.p: list[float] = []
        self._tick = 0
        self._pending: dict[int, tuple[float, int, float]] = {}  # rid -> base, tick, base+Q

    def _grow(self, n: int) -> None:
        while len(self.queue) < n:
            self.queue.append(0)
            self.theta.append(0.0)
            self.p.append(self.p0)

    def _advance(self, now: float) -> int:
        """Apply the decay ticks up to ``now``; return the current tick."""
        tick = math.floor(now / self.decay_period + 1e-9)
        k = tick - self._tick
        if k > 0:
            for i, q in enumerate(self.queue):
                for _ in range(min(k, 64)):  # floor per tick, as the timer does
                    if q == 0:
                        break
                    q = math.floor(q * _DECAY)
                if k > 64 and q:
                    q = math.floor(q * _DECAY ** (k - 64))
                self.queue[i] = q
            self._tick = tick
        return self._tick

    def route(self, req: RouteRequest, view: ClusterView) -> Decision:
        n = len(view)
        self._grow(n)
        tick = self._advance(view.now)
        matched = view.matched(req)
        total = len(req)
        best, best_pred, best_base, best_q = -1, math.inf, 0.0, 0.0
        for i in view.candidates().tolist():
            c = int(matched[i])
            base = max(1.0, self.a0 + self.a_hit * c + self.a_miss * (total - c))
            pred = max(1.0, base + self.q_weight * self.queue[i] + self.theta[i])
            if best < 0 or pred < best_pred - self.tolerance:
                best, best_pred, best_base, best_q = i, pred, base, float(self.queue[i])
        self.queue[best] += round(best_base)
        self._pending[req.rid] = (best_base, tick, best_base + best_q)
        return Decision(best, branch="min_predicted", predicted_s=best_pred / 1000)

    def on_complete(self, fb: Feedback) -> None:
        pending = self._pending.pop(fb.rid, None)
        if pending is None:
            return
        base, sent_tick, prior = pending
        w = fb.worker
        self._grow(w + 1)
        tick = self._advance(fb.now)
        self.queue[w] = max(0, self.queue[w] - round(base * _DECAY ** (tick - sent_tick)))
        if not fb.ok or fb.e2e_s is None:
            return
        target = max(1.0, fb.e2e_s * 1000 - prior)
        gain = self.p[w] / (self.forgetting + self.p[w])
        self.theta[w] += gain * (target - self.theta[w])
        self.p[w] = (1 - gain) * self.p[w] / self.forgetting

    def on_workers_changed(self, count: int) -> None:
        self._grow(count)
        del self.queue[count:], self.theta[count:], self.p[count:]

    def on_worker_removed(self, index: int, count: int) -> None:
        for state in (self.queue, self.theta, self.p):
            if index < len(state):
                del state[index]
        self.on_workers_changed(count)
