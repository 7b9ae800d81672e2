"""The router's one mechanism for prefix matches: an in-sync exact source answers for its
worker, the approximate index for the others, through ``matched`` and ``view.matched``."""

from __future__ import annotations

import numpy as np

from kvroute.routing import make_router_policy
from kvroute.routing.base import ClusterView, Decision, RouteRequest, RoutingPolicy
from kvroute.routing.router import Router


class FakeExact:
    """An exact source that holds a fixed prefix."""

    def __init__(self, held: np.ndarray) -> None:
        self.prefix = held
        self.in_sync = True

    def match(self, units: np.ndarray, adapter: str | None = None) -> int:
        n = min(len(units), len(self.prefix))
        diff = np.flatnonzero(units[:n] != self.prefix[:n])
        return int(diff[0]) if len(diff) else n

    def held(self) -> int:
        return len(self.prefix)


class Fixed(RoutingPolicy):
    """Routes to worker ``w`` and remembers what its view's match said."""

    name = "fixed-test"
    uses_index = True

    def __init__(self, w: int) -> None:
        super().__init__()
        self.w = w
        self.seen: list[list[int]] = []
        self.sizes: list[list[int]] = []

    def route(self, req: RouteRequest, view: ClusterView) -> Decision:
        self.seen.append(view.matched(req).tolist())
        self.sizes.append(view.index_sizes().tolist())
        return Decision(self.w)


def _req(units: list[int]) -> RouteRequest:
    return RouteRequest(np.array(units, dtype=np.int64))


def test_exact_source_answers_for_its_worker_only_while_in_sync() -> None:
    policy = Fixed(0)
    router = Router(policy, 3)
    router.route(_req([1, 2, 3, 4]), 0.0)  # the approximate index: worker 0 holds it
    exact = FakeExact(np.array([1, 2, 9], dtype=np.int64))
    router.attach_exact(1, exact)
    d = router.route(_req([1, 2, 3, 4, 5]), 1.0)
    assert policy.seen[-1] == [4, 2, 0]  # worker 1 from its exact source
    assert policy.sizes[-1] == [4, 3, 0]
    assert (d.expected, d.available, d.exact) == (4, 4, False)
    policy.w = 1
    d = router.route(_req([1, 2, 7]), 2.0)
    assert policy.seen[-1] == [2, 2, 0] and d.exact and d.expected == 2
    exact.in_sync = False  # out of sync: back to what routing taught (worker 1 got [1, 2, 7])
    router.route(_req([1, 2, 7, 8]), 3.0)
    assert policy.seen[-1] == [2, 3, 0]
    assert router.matched(_req([1, 2, 7, 8])).tolist() == [2, 4, 0]  # recorded just now


def test_exact_sources_follow_the_workers_numbering() -> None:
    policy = Fixed(0)
    router = Router(policy, 3)
    router.attach_exact(2, FakeExact(np.arange(5, dtype=np.int64)))
    router.remove_worker(0, 0.0)
    assert router.matched(_req([0, 1, 2])).tolist() == [0, 3]
    router.add_worker()
    assert router.matched(_req([0, 1])).tolist() == [0, 2, 0]
    router.detach_exact(1)
    assert router.matched(_req([0, 1])).tolist() == [0, 0, 0]


def test_exact_source_without_an_approximate_index_and_the_available_mask() -> None:
    router = Router(make_router_policy("round_robin"), 2)  # keeps no index
    assert router.index is None
    d = router.route(_req([5, 6]), 0.0)
    assert (d.expected, d.available) == (0, 0)
    router.attach_exact(1, FakeExact(np.array([5, 6], dtype=np.int64)))
    d = router.route(_req([5, 6]), 1.0, allowed=[True, False])
    assert d.worker == 0 and (d.expected, d.available) == (0, 0)  # worker 1 not allowed
    d = router.route(_req([5, 6]), 2.0)
    assert d.worker == 1 and (d.expected, d.available, d.exact) == (2, 2, True)


def test_prompts_in_flight_on_an_exact_worker_count_until_their_dispatch_closes() -> None:
    policy = Fixed(1)
    router = Router(policy, 2)
    router.attach_exact(1, FakeExact(np.array([1], dtype=np.int64)))
    first = router.route(_req([1, 2, 3, 4]), 0.0)  # sent to worker 1, not yet computed
    second = router.route(_req([1, 2, 3, 9]), 0.1)
    assert policy.seen[-1] == [0, 3] and second.expected == 3 and second.exact
    router.complete(first, 1.0)
    assert router.matched(_req([1, 2, 3, 4])).tolist() == [0, 3]  # second still open
    router.complete(second, 1.5)
    assert router.matched(_req([1, 2, 3, 4])).tolist() == [0, 1]  # the source alone


def test_last_sent_comes_from_routing_history_even_for_exact_workers() -> None:
    """When each worker was last sent its longest prefix: the approximate index's record
    times, for an exact worker as well (its events say what is held, not when it was asked
    for); -inf where nothing was sent, and without an index."""
    policy = Fixed(0)
    router = Router(policy, 3)
    router.route(_req([1, 2, 3]), 1.0)
    router.route(_req([1, 2, 4]), 2.0)  # worker 0's [1, 2] was last sent at 2.0
    policy.w = 1
    router.attach_exact(1, FakeExact(np.array([1, 2, 3], dtype=np.int64)))
    router.route(_req([1, 2, 3]), 3.0)
    for units, times in (([1, 2, 3, 9], [1.0, 3.0, -np.inf]), ([1, 2, 7], [2.0, 3.0, -np.inf])):
        matched, last = router.caches.match_last_sent(_req(units).units)
        assert last.tolist() == times
        assert matched.tolist() == router.caches.match(_req(units).units).tolist()
    bare = Router(make_router_policy("round_robin"), 2)
    matched, last = bare.caches.match_last_sent(_req([1, 2]).units)
    assert last.tolist() == [-np.inf, -np.inf]
    assert matched.tolist() == [0, 0]


def test_the_view_gives_the_same_match_whichever_is_asked_first() -> None:
    """``view.last_sent`` asked first fills ``view.matched`` from the same walk (the exact
    worker's own match included); asked after it, the match stays and the times agree."""
    router = Router(Fixed(0), 3)
    router.route(_req([1, 2, 3]), 1.0)
    router.attach_exact(1, FakeExact(np.array([1, 2, 3], dtype=np.int64)))
    view = router.view
    first, then = _req([1, 2, 3, 9]), _req([1, 2, 3, 9])
    times = view.last_sent(first)
    assert view.matched(first).tolist() == [3, 3, 0]
    assert view.matched(then).tolist() == [3, 3, 0]
    assert view.last_sent(then).tolist() == times.tolist() == [1.0, -np.inf, -np.inf]
    early = _req([1, 2, 3, 9])  # the live proxy asks the router first, for its metrics
    assert router.matched(early).tolist() == [3, 3, 0]
    assert view.last_sent(early).tolist() == times.tolist()
