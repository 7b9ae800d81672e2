"""The live router's requests held back by the policy (late binding,
``RoutingPolicy.holds``): a :class:`~kvroute.routing.hold_queue.HoldQueue` of futures.

Contract: ``await holds.wait(req)`` returns at once (0.0) when nothing is held and the
policy does not hold ``req``; otherwise when ``req`` is released, with the seconds it was
held. ``kick()`` releases the head if the policy no longer holds it; the forwarder calls
it after every routing decision, first token and completion, and a task calls it every
``HOLD_RECHECK_S`` while anything is held. One request is released at a time: from its
release until its task resumes (and routes it at once, then kicks: the forwarder's
``_route``) a ``kick`` releases nothing and an arrival queues behind it, so the policy
sees each release routed before it judges the next or a newcomer, as in the simulator. A
request whose client goes away while held is dropped from the queue (the cancellation
propagates). Never held: a retry, and a request pinned to one worker (the Responses
API's continuation).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import numpy as np

from kvroute.routing.base import RouteRequest
from kvroute.routing.hold_queue import HOLD_RECHECK_S, HoldQueue
from kvroute.routing.router import Router

__all__ = ["Holds"]


class Holds:
    def __init__(self, router: Router, allowed: Callable[[float], np.ndarray],
                 clock: Callable[[], float]) -> None:
        self.queue: HoldQueue[asyncio.Future[float]] = HoldQueue(router)
        self.allowed = allowed  # now -> the workers a request may be routed to
        self.clock = clock
        self._ticker: asyncio.Task[None] | None = None
        self._transit: asyncio.Future[float] | None = None  # released, its task not resumed

    def __len__(self) -> int:
        return len(self.queue)

    async def wait(self, req: RouteRequest) -> float:
        now = self.clock()
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        if not self.queue.offer(req, future, now, self.allowed(now),
                                behind=self._transit is not None):
            return 0.0
        if self._ticker is None or self._ticker.done():
            self._ticker = asyncio.create_task(self._tick())
        try:
            held = await future
        except asyncio.CancelledError:
            self.queue.discard(future)
            if self._transit is future:  # released as it was cancelled: the next one's turn
                self._transit = None
                self.kick()
            raise
        if self._transit is future:
            self._transit = None  # the caller routes it now, then kicks
        return held

    def kick(self) -> None:
        """Release the head if the policy no longer holds it."""
        if not self.queue or self._transit is not None:
            return
        now = self.clock()
        head = self.queue.release(now, self.allowed(now))
        if head is not None:
            req, future, since = head
            req.forget_matches()  # routed when its task resumes: the index may move first
            if not future.done():
                future.set_result(now - since)
                self._transit = future
            else:
                self.kick()

    async def _tick(self) -> None:
        while self.queue:
            await asyncio.sleep(HOLD_RECHECK_S)
            self.kick()

    async def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
