"""Recursive least squares with forgetting: a linear model learned one sample at a time.

``y ~ theta . x``. Each ``update(x, y)`` is the textbook RLS step with forgetting factor
``lam`` (0 < lam <= 1; a sample's weight decays by ``lam`` per later sample)::

    k     = P x / (lam + x' P x)
    theta = theta + k (y - theta . x)
    P     = (P - k x' P) / lam

``theta`` starts at ``prior`` and ``P`` at ``p0 * I`` (large ``p0``: the prior is soon
forgotten). ``theta`` minimises the weighted squared error ``sum lam^(n-i) (y_i - theta .
x_i)^2`` plus the prior's term ``lam^n |theta - prior|^2 / p0``, whose matrix is
``M = P^-1`` (kept as ``M <- lam M + x x'``, from ``I / p0``).

``coefficients()`` (what ``predict`` uses) minimise the same error subject to every
coefficient >= ``floor`` (default 0), so a model of times made of non-negative costs
never predicts a saving from a load: ``theta`` where it is within the bounds, else the
minimum of ``(c - theta)' M (c - theta)`` over ``c >= floor`` (the same objective up to
a constant), found over the sets of coefficients held at the floor (at most 2^k - 1
small solves for k coefficients, usually one; ``floor = -inf`` skips it). Clipping
``theta`` instead is biased where features move together: a negative coefficient
dropped leaves its partner's compensating excess in place (measured: the decode model of
``learned`` on GSP at 12 requests/s, per token ``0.33 - 0.033 (in flight + 1) + 1.08
ctx``, clipped, over-predicted E2E by 1.7 s on a 2.6 s mean). Computed once after each
update. Mechanism only: which features and targets are the caller's business.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kvroute.errors import ConfigError

__all__ = ["OnlineRegression"]


class OnlineRegression:
    def __init__(self, prior: Sequence[float], lam: float = 0.998, p0: float = 1e3,
                 floor: float = 0.0) -> None:
        if not 0.0 < lam <= 1.0:
            raise ConfigError(f"forgetting factor must be in (0, 1], got {lam}")
        if not p0 > 0:
            raise ConfigError(f"p0 must be > 0, got {p0}")
        self.theta = np.array(prior, dtype=np.float64)
        n = len(self.theta)
        self.P = np.eye(n) * float(p0)
        self.M = np.eye(n) / float(p0)  # P^-1, kept apart (inverting P loses precision)
        self.lam = float(lam)
        self.floor = float(floor)
        self.samples = 0
        self._coef: np.ndarray | None = None

    def coefficients(self) -> np.ndarray:
        """The coefficients used for prediction: the least-squares fit with every
        coefficient >= ``floor`` (the module doc). A read-only array, computed once per
        update."""
        if self._coef is None:
            self._coef = self._bounded()
            self._coef.setflags(write=False)
        return self._coef

    def _bounded(self) -> np.ndarray:
        """The bounded fit: over the sets of coefficients held at the floor (those
        below it first, then by size), the first whose free coefficients' optimum is
        within the bounds and where raising no held coefficient lowers the error (the
        optimality conditions of this convex problem, so the first found is the
        minimum)."""
        theta, floor = self.theta, self.floor
        below = theta < floor
        if not below.any():
            return theta.copy()
        n, M = len(theta), self.M
        first = sum(1 << i for i in range(n) if below[i])
        rest = sorted((h for h in range(1, 1 << n) if h != first), key=lambda h: h.bit_count())
        for held in [first, *rest]:  # bit i: coefficient i held at the floor
            at = np.array([held >> i & 1 for i in range(n)], dtype=bool)
            free = ~at
            c = np.full(n, floor)
            if free.any():  # the free ones' optimum with the held ones at the floor
                shift = M[np.ix_(free, at)] @ (floor - theta[at])
                try:
                    c[free] = theta[free] - np.linalg.solve(M[np.ix_(free, free)], shift)
                except np.linalg.LinAlgError:
                    continue
                if not (c[free] >= floor).all():
                    continue
            d = c - theta
            grad = M @ d  # the error's slope; 0 for the free ones
            if (grad[at] >= -1e-9 * (np.abs(M) @ np.abs(d))[at]).all():
                return c
        return np.maximum(theta, floor)  # not reached in exact arithmetic

    def predict(self, x: Sequence[float] | np.ndarray) -> float:
        return float(np.dot(self.coefficients(), np.asarray(x, dtype=np.float64)))

    def update(self, x: Sequence[float] | np.ndarray, y: float) -> None:
        xv = np.asarray(x, dtype=np.float64)
        px = self.P @ xv
        denom = self.lam + float(xv @ px)
        if not denom > 0 or not np.isfinite(y):
            return
        k = px / denom
        self.theta = self.theta + k * (float(y) - float(self.theta @ xv))
        self.P = (self.P - np.outer(k, px)) / self.lam
        self.M = self.lam * self.M + np.outer(xv, xv)
        self.samples += 1
        self._coef = None
