"""Recursive least squares with forgetting: a linear model learned one sample at a time.

``y ~ theta . x``. Each ``update(x, y)`` is the textbook RLS step with forgetting factor
``lam`` (0 < lam <= 1; a sample's weight decays by ``lam`` per later sample)::

    k     = P x / (lam + x' P x)
    theta = theta + k (y - theta . x)
    P     = (P - k x' P) / lam

``theta`` starts at ``prior`` and ``P`` at ``p0 * I`` (large ``p0``: the prior is soon
forgotten). ``predict`` clips each coefficient at ``floor`` (default 0) first, so a model
of times made of non-negative costs never predicts a saving from a load.

Clipping is biased where features move together: a negative coefficient dropped leaves
its partner's compensating excess in place (``learned``'s decode model on GSP at 12
requests/s: per token ``0.33 - 0.033 (in flight + 1) + 1.08 ctx``, clipped, over-predicted
E2E by 1.7 s on a 2.6 s mean). With ``intercept=i`` (the index of the constant feature),
that coefficient is then refitted to the clipped others: the least-squares value given
them (``theta_i - M_i . (c - theta) / M_ii`` over the other coefficients ``c``, where
``M = P^-1`` is the weighted ``sum x x'``, kept as ``M <- lam M + x x'`` from ``I / p0``;
only its row ``i`` without ``ridge``), itself at least ``floor``. The slopes stay the
clipped ones, so a caller that compares predictions across choices with the same
intercept decides as with plain clipping, and the level of the predictions loses most
of the bias. (The least-squares fit with every coefficient under the bound predicts
better still, but ``learned`` decided worse with it: docs/routing-results.md, "The
models' bound, tried and reverted".)

With ``ridge`` (one weight >= 0 per coefficient, ``R`` their diagonal matrix) the fit is
pulled towards ``prior`` where the data leave it undetermined: the coefficients are
``(M + R)^-1 (M theta + R prior)`` (the least-squares fit plus ``R``'s penalty on the
distance from the prior; ``M`` grows with the samples, so the pull fades where they tell
the coefficients apart, and stays in the directions they do not, e.g. two features that
move together), then clipped and the intercept refitted as above, with ``M + R`` for
``M``. ``R`` also gives back to every coefficient the part of the prior's starting
weight ``1 / p0`` that forgetting has taken from ``M`` (``(1 - lam^samples) / p0``): where
no sample excites a direction that the given ridge leaves free (a client that sends the
same request one at a time: the features never vary apart), ``M + R`` would otherwise
become singular after some thousands of samples at ``lam`` 0.998 and the solve fail;
so that direction stays at its prior. A sample of weight ``v`` is ``update(sqrt(v) x,
sqrt(v) y)``. Mechanism only: which features, weights and targets are the caller's
business.

Long runs. ``P`` is updated in a form that keeps it symmetric to the bit (``update``), or
rounding errors grow by ``1 / lam`` per sample until, after some ten thousand samples at
``lam`` 0.998, ``P`` is no longer positive definite and the fit learns nonsense. In a
direction that no sample excites (features that never vary apart, e.g. a constant
count of requests in flight beside the intercept) ``P`` still grows by ``1 / lam`` per
sample, as forgetting means, and would overflow after some 350,000 samples at 0.998:
where ``|P|`` passes ``P_LIMIT`` (checked every 1,024 samples) or a sample finds it
astray (``x' P x`` not positive and finite), ``P`` is reset to ``p0 * I`` (``resets``
counts them): the coefficients stay, and the next samples move them as at the start.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from kvroute.errors import ConfigError

__all__ = ["OnlineRegression"]

P_LIMIT = 1e100  # |P| beyond this (a direction no sample excites, grown by 1 / lam per sample)


class OnlineRegression:
    def __init__(self, prior: Sequence[float], lam: float = 0.998, p0: float = 1e3,
                 floor: float = 0.0, intercept: int | None = None,
                 ridge: Sequence[float] | None = None) -> None:
        if not 0.0 < lam <= 1.0:
            raise ConfigError(f"forgetting factor must be in (0, 1], got {lam}")
        if not p0 > 0:
            raise ConfigError(f"p0 must be > 0, got {p0}")
        self.theta = np.array(prior, dtype=np.float64)
        n = len(self.theta)
        if intercept is not None and not 0 <= intercept < n:
            raise ConfigError(f"intercept must index one of the {n} coefficients, got {intercept}")
        self.p0 = float(p0)
        self.P = np.eye(n) * self.p0
        self.M = np.eye(n) / self.p0  # P^-1, kept apart (inverting P loses precision)
        self.lam = float(lam)
        self.floor = float(floor)
        self.intercept = intercept
        self.prior = self.theta.copy()
        self.ridge = None if ridge is None else np.diag(np.asarray(ridge, dtype=np.float64))
        if self.ridge is not None and (self.ridge.shape != self.P.shape
                                       or not (np.diag(self.ridge) >= 0).all()):
            raise ConfigError(f"ridge needs {n} weights >= 0, got {list(ridge or ())}")
        self._ridge_diag = [] if self.ridge is None else np.diag(self.ridge).tolist()
        self._prior_list = self.prior.tolist()
        self._kept = 1.0  # lam ** samples: the share of the prior's weight left in M
        self.samples = 0
        self.resets = 0  # times P was reset (the module doc)
        self._coef: np.ndarray | None = None  # coefficients() of the theta in _coef_of
        self._coef_of: np.ndarray | None = None
        self._list: list[float] | None = None  # coefficient_list() of the theta in _list_of
        self._list_of: np.ndarray | None = None

    def coefficients(self) -> np.ndarray:
        """The coefficients used for prediction: clipped at ``floor``, the intercept (if
        any) then refitted to the others (the module doc). Read-only; computed once per
        ``theta`` (``update`` replaces it), since a router reads them for every decision."""
        if self._coef is None or self._coef_of is not self.theta:
            out = np.array(self.coefficient_list())
            out.flags.writeable = False
            self._coef, self._coef_of = out, self.theta
        return self._coef

    def coefficient_list(self) -> list[float]:
        """:meth:`coefficients` as a list (computed once per ``theta``; not to be changed):
        in plain Python where nothing needs numpy, which costs more than the arithmetic
        at these sizes (its sums are in the same order as ``np.dot``'s here)."""
        if self._list is not None and self._list_of is self.theta:
            return self._list
        floor = self.floor
        t: list[float] = self.theta.tolist()
        if self.ridge is not None:  # (M + R') t = M theta + R' prior, R' = R + (1 - kept) / p0
            extra = (1.0 - self._kept) / self.p0  # (the module doc)
            m = self.M.tolist()
            rhs = []
            for j, (row, r, p) in enumerate(zip(m, self._ridge_diag, self._prior_list,
                                                strict=True)):
                mt = 0.0
                for a, b in zip(row, t, strict=True):
                    mt += a * b
                row[j] += r + extra
                rhs.append(mt + (r + extra) * p)
            t = _solve([row[:] for row in m], rhs)
        elif min(t) >= floor:  # nothing clipped
            self._list, self._list_of = t, self.theta
            return t
        else:
            m = self.M.tolist() if self.intercept is not None else []
        clipped = [floor if floor > v else v for v in t]  # max(): slower (it parses keywords)
        i = self.intercept
        if i is not None:
            row = m[i]
            dot = 0.0
            for j, (c, v) in enumerate(zip(clipped, t, strict=True)):
                if j != i:
                    dot += row[j] * (c - v)
            c = t[i] - dot / row[i]
            clipped[i] = floor if floor > c else c
        self._list, self._list_of = clipped, self.theta
        return clipped

    def predict(self, x: Sequence[float] | np.ndarray) -> float:
        """``coefficients() . x``, summed in order as ``np.dot`` does at these sizes (in
        plain Python: a router predicts for every completion)."""
        total = 0.0
        for c, v in zip(self.coefficient_list(),
                        x.tolist() if isinstance(x, np.ndarray) else x, strict=True):
            total += c * v
        return total

    def update(self, x: Sequence[float] | np.ndarray, y: float) -> None:
        xv = np.asarray(x, dtype=np.float64)
        if not math.isfinite(y):
            return
        px = self.P.dot(xv)
        denom = self.lam + float(xv.dot(px))
        if not 0 < denom < math.inf or (self.samples & 1023 == 0
                                         and not float(np.abs(self.P).max()) < P_LIMIT):
            if not np.isfinite(xv).all():
                return  # a bad sample, not a bad P: it teaches nothing
            self._reset()  # P outgrew the limit or went astray (the module doc)
            px = self.P.dot(xv)
            denom = self.lam + float(xv.dot(px))
            if not 0 < denom < math.inf:
                return
        k = px / denom
        self.theta = self.theta + k * (float(y) - float(self.theta.dot(xv)))
        # in place (P and M are this object's alone): fewer numpy calls per sample; P x x' P
        # as px px' / denom, which is symmetric to the bit, not as k px' (the module doc)
        step = np.multiply.outer(px, px)
        step /= denom
        self.P -= step
        self.P /= self.lam
        if self.ridge is not None:  # the ridge reads all of M, the intercept one row
            self._kept *= self.lam
            self.M *= self.lam
            self.M += np.multiply.outer(xv, xv)
        elif self.intercept is not None:
            row = self.M[self.intercept]  # a view: the same arithmetic, n values, not n^2
            row *= self.lam
            row += xv[self.intercept] * xv
        self.samples += 1

    def _reset(self) -> None:
        """``P`` back to ``p0 * I``: uncertain again, as at the start; ``theta`` and ``M``
        (the data's weight) stay."""
        self.P = np.eye(len(self.theta)) * self.p0
        self.resets += 1


def _solve(a: list[list[float]], b: list[float]) -> list[float]:
    """``a x = b`` by Gaussian elimination with partial pivoting, in place, in plain
    Python (a few microseconds at these sizes, against about fifteen for
    ``np.linalg.solve``'s call; the results agree to rounding). A zero pivot (a singular
    ``a``, which the ridge prevents) defers to numpy, which raises as before."""
    n = len(b)
    for c in range(n):
        piv, top = c, abs(a[c][c])
        for r in range(c + 1, n):
            if abs(a[r][c]) > top:
                piv, top = r, abs(a[r][c])
        if top == 0.0:
            return np.linalg.solve(np.array(a), np.array(b)).tolist()  # type: ignore[no-any-return]
        if piv != c:
            a[c], a[piv] = a[piv], a[c]
            b[c], b[piv] = b[piv], b[c]
        inv = 1.0 / a[c][c]
        row_c = a[c]
        for r in range(c + 1, n):
            f = a[r][c] * inv
            if f:
                row_r = a[r]
                for k in range(c, n):
                    row_r[k] -= f * row_c[k]
                b[r] -= f * b[c]
    x = [0.0] * n
    for r in range(n - 1, -1, -1):
        acc = b[r]
        row_r = a[r]
        for k in range(r + 1, n):
            acc -= row_r[k] * x[k]
        x[r] = acc / row_r[r]
    return x
