"""``HoldQueue``: the requests a routing policy holds back (late binding), first come
first served; one implementation for the simulator and the live router.

Contract: ``offer(req, item, now, allowed)`` is called for every arriving request: False
means route it now (nothing is held and the policy does not hold it); True means it is
queued behind those held before it (an arrival never passes a held request; with
``behind=True`` it is queued without asking, for a caller whose last release is not yet
routed). Whenever the router's state changes (a first token, a completion, a routing
decision; the simulator at every engine step too), and at least every ``HOLD_RECHECK_S``
seconds while anything is held, the caller calls ``release(now, allowed)`` and routes
what it returns, one at a time, until it returns None: the head, once the policy no
longer holds it (``Router.hold``), asked again only after the one before it was routed.
``discard(item)`` drops a held item whose client went away. ``item`` is the caller's
(the simulator's request, the live router's future); the queue only keeps it beside its
request.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Generic, TypeVar

import numpy as np

from kvroute.routing.base import RouteRequest
from kvroute.routing.router import Router

__all__ = ["HOLD_RECHECK_S", "HoldQueue"]

HOLD_RECHECK_S = 0.02  # the longest a held request waits for its policy to be asked again

T = TypeVar("T")
Allowed = Sequence[bool] | np.ndarray | None


class HoldQueue(Generic[T]):
    def __init__(self, router: Router) -> None:
        self.router = router
        self._held: deque[tuple[RouteRequest, T, float]] = deque()

    def __len__(self) -> int:
        return len(self._held)

    def offer(self, req: RouteRequest, item: T, now: float, allowed: Allowed = None,
              behind: bool = False) -> bool:
        """``behind``: queue it even if nothing is held (a request released and not yet
        routed is ahead of it)."""
        if not behind and not self._held and not self.router.hold(req, now, allowed):
            return False
        self._held.append((req, item, now))
        return True

    def release(self, now: float,
                allowed: Allowed = None) -> tuple[RouteRequest, T, float] | None:
        """The head (its request, item and the time it was offered) if the policy no
        longer holds it, popped; else None. Route it before asking for the next: the
        policy must see it routed."""
        held = self._held
        if held and not self.router.hold(held[0][0], now, allowed):
            return held.popleft()
        return None

    def discard(self, item: T) -> None:
        self._held = deque(h for h in self._held if h[1] is not item)
