"""Recursive least squares with forgetting: a linear model learned one sample at a time.

``y ~ theta . x``. Each ``update(x, y)`` is the textbook RLS step with forgetting factor
``lam`` (0 < lam <= 1; a sample's weight decays by ``lam`` per later sample)::

    k     = P x / (lam + x' P x)
    theta = theta + k (y - theta . x)
    P     = (P - k x' P) / lam

``theta`` starts at ``prior`` and ``P`` at ``p0 * I`` (large ``p0``: the prior is soon
forgotten). ``predict`` clips each coefficient at ``floor`` (default 0) first, so a model
of times made of non-negative costs never predicts a saving from a load. Clipping is
biased where features move together (a negative coefficient dropped leaves its partner's
compensating excess in place); the least-squares fit under the same bound predicts
better, but ``learned`` decided worse with it, so clipping stays (docs/routing-results.md,
"The models' bound, tried and reverted"). Mechanism only: which features and targets are
the caller's business.
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
        self.P = np.eye(len(self.theta)) * float(p0)
        self.lam = float(lam)
        self.floor = float(floor)
        self.samples = 0

    def coefficients(self) -> np.ndarray:
        """The coefficients used for prediction (clipped at ``floor``)."""
        out: np.ndarray = np.maximum(self.theta, self.floor)
        return out

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
        self.samples += 1
