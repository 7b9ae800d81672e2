"""When ``learned`` holds a request back (``RoutingPolicy.holds``): decodes first.

In an engine that runs prefill steps before decode steps (SGLang's default scheduler, the
simulator's), a prefill sent to a worker stalls every request decoding there; where decodes
ride along (vLLM's mixed steps) each of their steps lasts as long as the prefill chunk.
While every worker has prefill queued, a new request would only join a queue. Held at the
router instead, it lets the requests already decoding finish first where they are the
shorter work (shortest remaining work first). ``learned`` holds a request while

1. every allowed worker has prefill queued or running, by the router's own accounting: a
   streamed request until its first token, one not streamed until its predicted first
   token (``ahead`` > 0, :func:`~kvroute.routing.uncached_share.queued_ahead`: the test
   that charges a copy in full); and
2. the requests decoding have, on average, less predicted decode time left (each one's
   predicted E2E less its TTFT, from its first token: ``PoolRoom.left``) than the request's
   own predicted prefill seconds (``work_w`` of the cost) on the worker that holds most
   of its prompt.

It is released as soon as either fails: a worker's last queued prefill produced its first
token, or the decodes left are longer than its prefill (long outputs: it is never held).
A held request is routed with what the router knows then. Measured in
docs/routing-results.md ("Late binding: decodes first"). No constant of its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kvroute.routing.base import ClusterView, RouteRequest
from kvroute.routing.uncached_share import queued_ahead

if TYPE_CHECKING:
    from kvroute.routing.learned import Learned

__all__ = ["holds"]


def holds(policy: Learned, req: RouteRequest, view: ClusterView) -> bool:
    """Whether ``policy`` holds ``req`` back now (the module doc)."""
    if len(view) > len(policy.share):
        policy.on_workers_changed(len(view))  # sized for every worker, as a decision is
    policy.pending.settle(view.now)
    ahead = queued_ahead(view.workers, policy.share, policy.pending.units)
    if min(ahead[w] for w in view.candidates().tolist()) == 0.0:
        return False  # a worker with no prefill queued (as the copy term's test): route now
    left = policy.room.left(view.now)
    if left is None:  # nothing decoding to protect
        return False
    a0, a1 = policy.models.coefficients()[:2]
    length = float(len(req))

    def prefill(hit: float) -> float:
        u = length - hit
        return u * a0 / 1000.0 + u * (hit + u / 2.0) * a1 / 1e6

    if a0 >= 0.0 and a1 >= 0.0:  # the prefill falls as the hit grows: no walk where both
        if left >= prefill(0.0):  # bounds (no hit, all but one unit hit) give the answer
            return False
        if left < prefill(length - 1.0):
            return True
    view.last_sent(req)  # one walk gives the match too, and routing reads both again
    return left < prefill(max(0.0, min(float(view.matched(req).max(initial=0))
                                       * policy.hit_realisation, length - 1.0)))
