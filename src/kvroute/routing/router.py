"""The router: one routing policy, its prefix index and the per-worker accounting.

``route`` turns a request into a :class:`Dispatch` (the worker and the decision) and
counts it in flight; ``first_token`` moves it from prefill to decode accounting;
``complete`` closes a dispatch exactly once (a second call is ignored), so in-flight
counts stay right whatever path a request ends by. The simulator
and the live HTTP router both drive this object; only their clocks differ.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from kvroute.errors import ConfigError
from kvroute.routing.base import (
    ClusterView,
    Decision,
    Feedback,
    RouteRequest,
    RoutingPolicy,
    WorkerProbe,
    WorkerState,
)
from kvroute.routing.prefix_index import DEFAULT_INDEX_CAPACITY, PrefixIndex

__all__ = ["Dispatch", "Router"]


@dataclass(eq=False)
class Dispatch:
    req: RouteRequest
    decision: Decision
    sent_at: float
    first_token_at: float | None = None
    closed: bool = False
    held: int = 0  # units of the prompt the index believed the worker held before this

    @property
    def worker(self) -> int:
        return self.decision.worker


class Router:
    def __init__(self, policy: RoutingPolicy, workers: int,
                 index_capacity: int = DEFAULT_INDEX_CAPACITY,
                 probes: Sequence[WorkerProbe] | None = None) -> None:
        if workers < 1:
            raise ConfigError(f"a router needs at least one worker, got {workers}")
        self.policy = policy
        self.workers = [WorkerState(i) for i in range(workers)]
        self.index = PrefixIndex(workers, index_capacity) if policy.uses_index else None
        self.view = ClusterView(self.workers, self.index, probes)
        self._next_rid = 0

    def route(self, req: RouteRequest, now: float) -> Dispatch:
        """Choose a worker for ``req`` (a request without an id gets a fresh one)."""
        if req.rid < 0:
            req.rid = self._next_rid
        self._next_rid = max(self._next_rid, req.rid) + 1
        self.view.now = now
        decision = self.policy.route(req, self.view)
        w = decision.worker
        if not 0 <= w < len(self.workers):
            raise ConfigError(f"policy {self.policy.name} chose worker {w} of "
                              f"{len(self.workers)}")
        state = self.workers[w]
        state.in_flight += 1
        state.in_flight_units += len(req)
        state.prefill_units += len(req)
        state.routed += 1
        held = 0
        if self.index is not None:
            held = int(self.view.matched(req)[w])
            self.index.record(w, req.units, now)
        return Dispatch(req, decision, now, held=held)

    def undelivered(self, dispatch: Dispatch) -> None:
        """The request never reached its worker (refused connection, rejected with an
        error status): the prefix index stops believing the worker holds its prompt."""
        if self.index is not None and not dispatch.closed:  # closed: the worker may be gone
            self.index.forget(dispatch.worker, dispatch.req.units, dispatch.held,
                              dispatch.sent_at)

    def first_token(self, dispatch: Dispatch, now: float) -> None:
        """The request's first token came back: it moves from prefill to decode."""
        if dispatch.closed or dispatch.first_token_at is not None:
            return
        dispatch.first_token_at = now
        state = self.workers[dispatch.worker]
        state.prefill_units -= len(dispatch.req)
        state.decode_units += len(dispatch.req)

    def complete(self, dispatch: Dispatch, now: float, ok: bool = True,
                 ttft_s: float | None = None, cached_tokens: int | None = None) -> None:
        if dispatch.closed:
            return
        dispatch.closed = True
        state = self.workers[dispatch.worker]
        state.in_flight -= 1
        state.in_flight_units -= len(dispatch.req)
        if dispatch.first_token_at is None:
            state.prefill_units -= len(dispatch.req)
        else:
            state.decode_units -= len(dispatch.req)
        if ok:
            state.completed += 1
        else:
            state.errors += 1
        self.view.now = now
        self.policy.on_complete(Feedback(
            worker=dispatch.worker, rid=dispatch.req.rid, ok=ok, prompt_units=len(dispatch.req),
            now=now, decision=dispatch.decision, e2e_s=now - dispatch.sent_at if ok else None,
            ttft_s=ttft_s if ttft_s is not None or dispatch.first_token_at is None
            else dispatch.first_token_at - dispatch.sent_at, cached_tokens=cached_tokens))
