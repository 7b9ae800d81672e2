"""``UncachedShare``: per worker, the share of the prompt units of a policy's open requests
that the policy predicted uncached, ``f_w = (sum of u) / (sum of L)`` over its open
requests on ``w``: at most 1, and 1 where it has none (nothing known: every queued unit
counts as uncached). ``learned`` multiplies the router's prefill units by it to estimate
the uncached units queued ahead of a request (:func:`queued_ahead`). When a worker's last
request leaves its sums are exactly 0 again (no rounding from the subtractions remains).
Mechanism only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kvroute.routing.base import WorkerState

__all__ = ["UncachedShare", "queued_ahead"]


class UncachedShare:
    def __init__(self) -> None:
        # per worker, in lists (a decision reads each entry once: no numpy call pays)
        self.uncached: list[float] = []  # sum of u over the open requests
        self.units: list[float] = []  # sum of L
        self.count: list[float] = []  # how many
        self.frac: list[float] = []  # f_w

    def __len__(self) -> int:
        return len(self.uncached)

    def ensure(self, n: int) -> None:
        if len(self.uncached) < n:
            pad = n - len(self.uncached)
            self.uncached += [0.0] * pad
            self.units += [0.0] * pad
            self.count += [0.0] * pad
            self.frac += [1.0] * pad

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
        rest = self.uncached[w] - uncached  # no max() below: it parses keywords per call
        self.uncached[w] = rest if rest > 0.0 else 0.0
        rest = self.units[w] - units
        self.units[w] = rest if rest > 0.0 else 0.0
        rest = self.count[w] - 1
        self.count[w] = rest if rest > 0.0 else 0.0
        if self.units[w] <= 0 or self.count[w] <= 0:
            self.uncached[w] = self.units[w] = self.count[w] = 0.0
        self._refresh(w)

    def remove_worker(self, index: int) -> None:
        """Worker ``index`` left; later workers shift down one index."""
        self.ensure(index + 1)
        for values in (self.uncached, self.units, self.count, self.frac):
            del values[index]

    def _refresh(self, w: int) -> None:
        total = self.units[w]
        f = self.uncached[w] / total if total > 0 else 1.0
        self.frac[w] = f if f < 1.0 else 1.0


def queued_ahead(workers: Sequence[WorkerState], share: UncachedShare,
                 pending: Sequence[float]) -> list[float]:
    """Per worker, the uncached units queued there (``ahead`` in ``learned``'s module doc):
    the router's prefill units of the requests it will see a first token of, times
    ``f_w``, plus ``pending[w]``, those of the others until their predicted first token
    (:class:`~kvroute.routing.pending_prefill.PendingPrefill`). 0 exactly where nothing is
    queued. ``share`` and ``pending`` must cover every worker."""
    return [(ws.prefill_units - ws.unstreamed_units) * f + p
            for ws, f, p in zip(workers, share.frac, pending, strict=False)]
