"""``UncachedShare``: per worker, the share of the prompt units of a policy's open requests
that the policy predicted uncached, ``f_w = (sum of u) / (sum of L)`` over its open
requests on ``w``: at most 1, and 1 where it has none (nothing known: every queued unit
counts as uncached). ``learned`` multiplies the router's prefill units by it to estimate
the uncached units queued ahead of a request. When a worker's last request leaves its
sums are exactly 0 again (no rounding from the subtractions remains). Mechanism only.
"""

from __future__ import annotations

import numpy as np

__all__ = ["UncachedShare"]


class UncachedShare:
    def __init__(self) -> None:
        self.uncached = np.zeros(0)  # per worker: sum of u over the open requests
        self.units = np.zeros(0)  # sum of L
        self.count = np.zeros(0)  # how many
        self.frac = np.ones(0)  # f_w

    def __len__(self) -> int:
        return len(self.uncached)

    def ensure(self, n: int) -> None:
        if len(self.uncached) < n:
            pad = n - len(self.uncached)
            self.uncached = np.concatenate([self.uncached, np.zeros(pad)])
            self.units = np.concatenate([self.units, np.zeros(pad)])
            self.count = np.concatenate([self.count, np.zeros(pad)])
            self.frac = np.concatenate([self.frac, np.ones(pad)])

    def add(self, w: int, uncached: float, units: int) -> None:
        """A request of ``units`` prompt units, ``uncached`` of them predicted uncached,
        opened on worker ``w`` (< ``len(self)``)."""
        self.uncached[w] += uncached
        self.units[w] += units
        self.count[w] += 1
        self._refresh(w)

    def remove(self, w: int, uncached: float, units: int) -> None:
        """The same request closed (nothing if ``w`` is no longer a worker)."""
        if w >= len(self.uncached):
            return
        self.uncached[w] = max(0.0, self.uncached[w] - uncached)
        self.units[w] = max(0.0, self.units[w] - units)
        self.count[w] = max(0.0, self.count[w] - 1)
        if self.units[w] <= 0 or self.count[w] <= 0:
            self.uncached[w] = self.units[w] = self.count[w] = 0.0
        self._refresh(w)

    def remove_worker(self, index: int) -> None:
        """Worker ``index`` left; later workers shift down one index."""
        self.ensure(index + 1)
        self.uncached = np.delete(self.uncached, index)
        self.units = np.delete(self.units, index)
        self.count = np.delete(self.count, index)
        self.frac = np.delete(self.frac, index)

    def _refresh(self, w: int) -> None:
        total = self.units[w]
        self.frac[w] = min(self.uncached[w] / total, 1.0) if total > 0 else 1.0
