"""``WorkerSpeed``: how much slower each worker is than the cluster's typical worker,
learned online from observed against predicted times.

Replicas are not always alike (different GPUs, a neighbour sharing the host, another
engine version), and a latency model shared by all workers predicts the same time for the
same work everywhere. The caller feeds the residuals of its shared model and multiplies
the model's predictions for a worker by the worker's factor:

* ``update(w, observed, predicted)``: a completed request on worker ``w``, ``predicted``
  the shared model's time for it. It adds ``r = clip(log(observed / predicted), -3, 3)``
  and ``r^2`` to ``w``'s running sums; the sums and the sample count ``n_w`` decay by
  ``forget`` per sample of ``w``. Non-positive times teach nothing.
* ``factors(n)``: per worker ``exp(sign(dev_w) * max(|dev_w| - margin, 0))`` where the
  deviation is told apart from noise (``dev_w^2 > z^2 se_w^2``), else exactly 1.
  ``dev_w = l_w - median_v l_v``, ``l_w = sum_w / (n_w + prior)`` (a worker with few
  samples stays near the typical speed: ``prior`` samples of log ratio 0), ``se_w`` the
  standard error of ``l_w``. The median is the typical worker: with one slow worker the
  others keep factor 1. The ``margin`` (0.15, 16%) is what the residuals of equal
  workers move by with their share of the traffic (measured in ``learned``: up to about
  10% on the Mooncake trace): smaller differences are not acted on, larger ones less
  the margin. Among equal workers the factors are 1 in most decisions, so a caller's ties
  between them survive; a worker at half speed among full-speed ones gets a factor of
  about 1.6 within a few dozen samples (two of four at half speed: about 1.4 times the
  others').

``Slowness``: two such estimates as witnesses, one from the TTFT residuals of requests
that found nothing queued ahead (their TTFT is the worker's own prefill; a queued
request's residual also measures the queue and the traffic the worker was given: the
decode residuals of equal workers differ by up to 30% with their share of a prefix
burst), one from the decode residuals, which a slow GPU also moves and the traffic moves
differently. ``factors(n)`` is the first witness's factor where the second deviates the
same way (both told apart from the typical worker, on the same side), else exactly 1: so
equal workers keep 1 and a caller's ties between them survive. Cached until either
witness changes; ``alike`` says whether the last ``factors`` were all 1.

Mechanism only: which times to feed, and where to apply the factors, is the caller's
business. No clock; ``forget`` counts samples.
"""

from __future__ import annotations

import math
import statistics

import numpy as np

__all__ = ["Slowness", "WorkerSpeed"]


class WorkerSpeed:
    def __init__(self, forget: float, prior: float = 10.0, z: float = 2.0,
                 margin: float = 0.15) -> None:
        self.forget = forget
        self.prior = prior
        self.z = z
        self.margin = margin
        # per worker, in lists (a few workers: plain Python costs less than numpy calls)
        self.sums: list[float] = []
        self.squares: list[float] = []
        self.counts: list[float] = []
        self._factors: list[float] = []  # kept current by update(): routing only reads them
        self._logs: list[float] = []  # l_w (the module doc)
        self._typical = 0.0  # their median
        self.version = 0  # counts the changes: the factors change only with it

    def ensure(self, n: int) -> None:
        if len(self.sums) < n:
            pad = [0.0] * (n - len(self.sums))
            self.sums += pad
            self.squares += pad
            self.counts += pad
            self._refresh()

    def remove(self, index: int) -> None:
        if index < len(self.sums):
            for values in (self.sums, self.squares, self.counts):
                del values[index]
            self._refresh()

    def factors(self, n: int) -> list[float]:
        """The first ``n`` workers' factors (1 for workers not seen yet)."""
        self.ensure(n)
        return self._factors[:n]

    def update(self, worker: int, observed: float, predicted: float) -> None:
        if not (observed > 0 and predicted > 0):
            return
        self.ensure(worker + 1)
        r = min(3.0, max(-3.0, math.log(observed / predicted)))
        f = self.forget
        self.sums[worker] = f * self.sums[worker] + r
        self.squares[worker] = f * self.squares[worker] + r * r
        self.counts[worker] = f * self.counts[worker] + 1.0
        # only this worker's log moved: the others' factors change only with the median
        self._logs[worker] = self.sums[worker] / max(self.counts[worker] + self.prior, 1e-12)
        typical = statistics.median(self._logs)
        if typical != self._typical:
            self._refresh()
            return
        self.version += 1
        self._factors[worker] = self._factor(worker, typical)

    def _refresh(self) -> None:
        self.version += 1
        self._logs = [s / max(c + self.prior, 1e-12) for s, c in zip(
            self.sums, self.counts, strict=True)]
        self._typical = typical = statistics.median(self._logs) if self._logs else 0.0
        self._factors = [self._factor(w, typical) for w in range(len(self._logs))]

    def _factor(self, w: int, typical: float) -> float:
        n = max(self.counts[w] + self.prior, 1e-12)
        log = self._logs[w]
        dev = log - typical
        se2 = max(self.squares[w] / n - log * log, 0.0) / n
        if dev * dev > self.z * self.z * se2:  # numpy's exp, as before (the standard
            # library's differs in the last bit)
            return float(np.exp([math.copysign(max(abs(dev) - self.margin, 0.0), dev)])[0])
        return 1.0


class Slowness:
    def __init__(self, forget: float) -> None:
        self.ttft = WorkerSpeed(forget)  # from the TTFT residuals, nothing queued ahead
        self.decode = WorkerSpeed(forget)  # from the decode residuals
        self._factors: list[float] = []
        self._key: tuple[int, int, int] | None = None
        self.alike = True  # the last factors() were all 1

    def ensure(self, n: int) -> None:
        self.ttft.ensure(n)
        self.decode.ensure(n)

    def remove(self, index: int) -> None:
        self.ttft.remove(index)
        self.decode.remove(index)

    def factor(self, w: int) -> float:
        """Worker ``w``'s entry of :meth:`factors` (computed for it alone)."""
        self.ensure(w + 1)
        return _agreed(self.ttft.factors(w + 1)[w], self.decode.factors(w + 1)[w])

    def factors(self, n: int) -> list[float]:
        """Per worker, the TTFT witness's factor where the decode witness deviates the same
        way, else 1 (the module doc)."""
        key = (n, self.ttft.version, self.decode.version)
        if self._key != key:
            self._factors = [_agreed(t, d) for t, d in zip(
                self.ttft.factors(n), self.decode.factors(n), strict=True)]
            self._key = key
            self.alike = all(v == 1.0 for v in self._factors)
        return self._factors


def _agreed(ttft: float, decode: float) -> float:
    """The TTFT witness's factor where the decode witness deviates the same way, else 1."""
    return ttft if (ttft - 1.0) * (decode - 1.0) > 0 else 1.0
