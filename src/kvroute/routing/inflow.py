"""``Inflow``: per worker, the new (uncached) prompt units a policy has sent it lately, as a
share of the cluster's: what fills each worker's cache.

Each :meth:`add` (a request of ``units`` predicted uncached, sent to ``worker``) first
decays every worker's sum by ``forget`` (per request routed, not per second: no clock),
then adds ``units`` to the worker's. :meth:`excess` gives, per worker, its sum over the
mean of the first ``n`` workers' sums, less 1: 0 for a worker at the mean, 1 for one at
twice it, -1 for one that was sent nothing; all 0 before anything was sent. A worker's
cache churns at the pace of its inflow, so a worker far above the mean evicts its
prefixes sooner than the others.

The sums are kept divided by the product of the decays (one multiplication per request,
not one per worker; renormalised before it underflows): ``excess`` is a ratio, the same
either way. Mechanism only: how the caller weighs an excess is its business.
"""

from __future__ import annotations

__all__ = ["Inflow"]


class Inflow:
    def __init__(self, forget: float) -> None:
        self.forget = forget
        self._sums: list[float] = []  # per worker, divided by _scale
        self._scale = 1.0

    def ensure(self, n: int) -> None:
        if len(self._sums) < n:
            self._sums += [0.0] * (n - len(self._sums))

    def add(self, worker: int, units: float) -> None:
        self.ensure(worker + 1)
        self._scale *= self.forget
        if self._scale < 1e-150:
            self._sums = [v * self._scale for v in self._sums]
            self._scale = 1.0
        self._sums[worker] += units / self._scale

    def excess(self, n: int, per: list[float] | None = None) -> list[float]:
        """Per worker ``0 .. n - 1``, its inflow over the mean of theirs, less 1 (the
        module doc); with ``per``, each worker's inflow times its ``per`` first (a
        slowness: a worker half as fast is at its share with half the inflow)."""
        sums, total = self.weighted(n, per)
        if total <= 0:
            return [0.0] * n
        return [v * n / total - 1.0 for v in sums]

    def weighted(self, n: int, per: list[float] | None = None) -> tuple[list[float], float]:
        """The inflows :meth:`excess` compares (scaled alike) and their sum: ``excess`` is
        ``v * n / total - 1`` of them, for a caller that reads a few."""
        self.ensure(n)
        sums = self._sums[:n] if per is None else [
            v * p for v, p in zip(self._sums, per[:n], strict=False)]
        return sums, sum(sums)

    def remove_worker(self, index: int) -> None:
        """Worker ``index`` left; later workers shift down one index."""
        self.ensure(index + 1)
        del self._sums[index]
