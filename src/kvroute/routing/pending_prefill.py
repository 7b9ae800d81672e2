"""``PendingPrefill``: per worker, the uncached units of the requests whose first token the
router will not see, counted only until their predicted first token is due.

The router's accounting counts such a request (``RouteRequest.streamed`` False) as
prefilling until it completes (``WorkerState.unstreamed_units``), since nothing tells it
when its prefill ended. A policy that predicts TTFTs can do better: it adds each such
request here with its uncached units and the time its first token is predicted, and
:meth:`settle`, at each decision, drops those whose time has come; :meth:`done` drops a
request that completed first. ``units[w]`` is then the prefill still believed queued on
``w``, exactly 0 when none of its requests is left (no rounding from the subtractions
remains: a caller may test for an empty queue). No clock: times are the caller's.
Mechanism only.
"""

from __future__ import annotations

import heapq

__all__ = ["PendingPrefill"]


class PendingPrefill:
    def __init__(self) -> None:
        self.units: list[float] = []  # per worker
        self._count: list[int] = []  # per worker, how many requests units[w] holds
        self._open: dict[int, tuple[int, float]] = {}  # key -> (worker, units)
        self._due: list[tuple[float, int]] = []  # heap of (predicted first token, key)

    def ensure(self, n: int) -> None:
        if len(self.units) < n:
            self._count += [0] * (n - len(self.units))
            self.units += [0.0] * (n - len(self.units))

    def add(self, key: int, worker: int, units: float, due: float) -> None:
        self.ensure(worker + 1)
        self._open[key] = (worker, units)
        self.units[worker] += units
        self._count[worker] += 1
        heapq.heappush(self._due, (due, key))

    def done(self, key: int) -> None:
        """``key`` is no longer prefilling (its first token is due, or it completed)."""
        entry = self._open.pop(key, None)
        if entry is not None:
            w, units = entry
            self._count[w] -= 1
            self.units[w] = max(0.0, self.units[w] - units) if self._count[w] else 0.0

    def settle(self, now: float) -> None:
        """Every request whose predicted first token is due by ``now`` is done."""
        due = self._due
        while due and due[0][0] <= now:
            self.done(heapq.heappop(due)[1])

    def remove_worker(self, index: int) -> None:
        """Worker ``index`` left: its requests are forgotten, later workers renumbered."""
        self.ensure(index + 1)
        del self.units[index]
        del self._count[index]
        self._open = {k: (w - (w > index), u) for k, (w, u) in self._open.items()
                      if w != index}
