"""HoldQueue: first come first served among held requests, one release at a time."""

from __future__ import annotations

import numpy as np

from kvroute.routing.base import ClusterView, Decision, RouteRequest, RoutingPolicy
from kvroute.routing.hold_queue import HoldQueue
from kvroute.routing.router import Router


class Gate(RoutingPolicy):
    """Holds every request while ``closed``, and a request for ``held_units`` units whatever
    the gate says; routes to worker 0."""

    name = "gate"

    def __init__(self) -> None:
        super().__init__(0)
        self.closed = False
        self.held_units = -1
        self.asked: list[int] = []

    def holds(self, req: RouteRequest, view: ClusterView) -> bool:
        self.asked.append(len(req))
        return self.closed or len(req) == self.held_units

    def route(self, req: RouteRequest, view: ClusterView) -> Decision:
        return Decision(0)


def _req(n: int) -> RouteRequest:
    return RouteRequest(np.arange(n, dtype=np.int64))


def test_nothing_held_routes_at_once() -> None:
    gate = Gate()
    queue: HoldQueue[str] = HoldQueue(Router(gate, 2))
    assert not queue.offer(_req(3), "a", 0.0)
    assert len(queue) == 0 and queue.release(0.0) is None


def test_an_arrival_never_passes_a_held_request() -> None:
    gate = Gate()
    queue: HoldQueue[str] = HoldQueue(Router(gate, 2))
    gate.held_units = 5
    assert queue.offer(_req(5), "held", 1.0)
    assert queue.offer(_req(3), "behind", 2.0)  # the policy would route it, but it waits
    assert gate.asked == [5]  # the one behind was not even asked
    assert queue.release(3.0) is None  # the head is still held: nothing moves
    gate.held_units = -1
    head = queue.release(4.0)
    assert head is not None and head[1:] == ("held", 1.0)
    nxt = queue.release(4.0)
    assert nxt is not None and nxt[1:] == ("behind", 2.0)
    assert queue.release(4.0) is None and len(queue) == 0


def test_behind_a_released_request_an_arrival_queues() -> None:
    """``behind``: a request released and not yet routed is ahead of it (the live
    router's transit), so it queues without asking the policy."""
    gate = Gate()
    queue: HoldQueue[str] = HoldQueue(Router(gate, 2))
    assert queue.offer(_req(3), "late", 0.0, behind=True)
    assert gate.asked == [] and len(queue) == 1
    head = queue.release(1.0)
    assert head is not None and head[1] == "late"


def test_release_asks_again_for_each_head() -> None:
    """One release per call: the caller routes it before the policy judges the next."""
    gate = Gate()
    queue: HoldQueue[int] = HoldQueue(Router(gate, 2))
    gate.closed = True
    for i in range(3):
        assert queue.offer(_req(i + 1), i, 0.0)
    gate.closed = False
    first = queue.release(1.0)
    assert first is not None and first[1] == 0 and len(queue) == 2
    gate.closed = True  # routing the first closed the gate again
    assert queue.release(1.0) is None and len(queue) == 2


def test_discard_drops_a_held_item_and_keeps_the_order() -> None:
    gate = Gate()
    queue: HoldQueue[object] = HoldQueue(Router(gate, 2))
    gate.closed = True
    a, b, c = object(), object(), object()
    for item in (a, b, c):
        queue.offer(_req(2), item, 0.0)
    queue.discard(b)
    gate.closed = False
    got = [queue.release(0.0), queue.release(0.0), queue.release(0.0)]
    assert [g[1] for g in got if g] == [a, c] and got[2] is None


def test_no_allowed_worker_is_not_held() -> None:
    """Routing such a request reports that no worker is allowed; holding it would hide that."""
    gate = Gate()
    gate.closed = True
    router = Router(gate, 2)
    assert not router.hold(_req(2), 0.0, [False, False])
    assert router.hold(_req(2), 0.0, [True, False])
