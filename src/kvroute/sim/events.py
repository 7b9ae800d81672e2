"""The simulator's event loop: a heap of events ordered by (time, priority, sequence).

Contract: events run in increasing time; among events at the same time, the lower
``priority`` runs first: :data:`STEP_END`, then :data:`ARRIVAL` (a request that arrives at
the instant a step ends sees the step's completions), then :data:`WAKE` (an idle worker
plans its next step after every request of that instant has arrived, so they batch).
Among equal time and
priority, the event scheduled first runs first. Nothing here reads the wall clock or a
global RNG, so a run is a pure function of its inputs and seeds.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any

from kvroute.errors import ConfigError

__all__ = ["ARRIVAL", "STEP_END", "WAKE", "EventLoop", "RealtimeLoop"]

STEP_END = 0  # a worker finishes a batch step (completions, then its next step)
ARRIVAL = 1  # a request arrives at the router
WAKE = 2  # an idle worker that was handed work plans its next step


class EventLoop:
    """A discrete-event clock. ``now`` is the time of the event being run (seconds)."""

    def __init__(self) -> None:
        self.now = 0.0
        self._heap: list[tuple[float, int, int, Callable[..., None], tuple[Any, ...]]] = []
        self._seq = 0
        self.processed = 0

    def at(self, time: float, priority: int, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn(*args)`` at ``time`` (never earlier than ``now``)."""
        if time < self.now:
            raise ConfigError(f"cannot schedule an event in the past ({time} < {self.now})")
        heapq.heappush(self._heap, (time, priority, self._seq, fn, args))
        self._seq += 1

    def __len__(self) -> int:
        return len(self._heap)

    def run(self, until: float = float("inf")) -> int:
        """Run events up to time ``until`` (inclusive); return how many ran."""
        heap = self._heap
        ran = 0
        while heap and heap[0][0] <= until:
            time, _, _, fn, args = heapq.heappop(heap)
            self.now = time
            fn(*args)
            ran += 1
        self.processed += ran
        return ran


class RealtimeLoop:
    """The same interface as :class:`EventLoop`, on an asyncio loop and its clock.

    ``now`` is seconds since the loop was created (asyncio's monotonic clock). Events run
    at their time through ``call_at``; priorities only order events due at the same
    instant, as far as asyncio's FIFO of ready callbacks allows. This is how the
    simulator's worker runs in real time (the emulated worker): same code, other clock.
    """

    def __init__(self, loop: Any) -> None:  # an asyncio.AbstractEventLoop
        self._loop = loop
        self._t0 = loop.time()
        self.processed = 0

    @property
    def now(self) -> float:
        return float(self._loop.time() - self._t0)

    def at(self, time: float, priority: int, fn: Callable[..., None], *args: Any) -> None:
        def run() -> None:
            self.processed += 1
            fn(*args)

        self._loop.call_at(self._t0 + max(time, 0.0) + priority * 1e-9, run)
