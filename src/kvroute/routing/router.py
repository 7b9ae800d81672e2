"""The router: one routing policy, its prefix index, and what it knows of each worker.

Contract (the simulator and the live HTTP router both drive this object through these
methods; only their clocks differ):

* Workers are numbered ``0..n-1``; worker ``i``'s state is ``workers[i]``. The router is
  the only writer of that state: its own accounting, and the engine-reported fields
  through ``report_load(i, ...)``.
* Membership: ``add_worker()`` appends worker ``n`` (a fresh state, a tenant in the prefix
  index) and calls ``policy.on_workers_changed(n + 1)``. ``remove_worker(i, now)`` first
  closes every dispatch still open on ``i`` as failed (the policy hears each
  ``on_complete(ok=False)`` once), then deletes its state and index tenant, renumbers the
  later workers and the open dispatches that point at them, calls
  ``policy.on_worker_removed(i, n - 1)`` and returns the dispatches it closed.
* Holding: ``hold(req, now, allowed)`` asks the policy whether to keep ``req`` back for
  now (``RoutingPolicy.holds``; the caller keeps it in a
  :class:`~kvroute.routing.hold_queue.HoldQueue` and routes it when released).
* Routing: ``route(req, now, allowed)`` asks the policy for a worker among those
  ``allowed`` marks (None: all; see :class:`~kvroute.routing.base.ClusterView`), counts
  the request in flight there and records its prompt in the prefix index. The policy only
  ever proposes an allowed worker, so nothing is cancelled behind its back: it hears
  ``on_complete`` exactly once per dispatch, from ``complete``. ``replied(d, units,
  now)``, before ``complete``, records the prompt and its reply (``units``) for a policy
  that declares ``records_replies``: the engine caches the reply too, and a
  conversation's next turn begins with both.
* Accounting: ``first_token`` moves a dispatch from prefill to decode accounting and
  tells the policy (``on_first_token``, once per dispatch);
  ``complete`` closes it exactly once (True; a second call is ignored and returns False),
  so in-flight counts stay right whatever path a request ends by. The engine's cached
  tokens it is given reach the policy in the router's units as well
  (``Feedback.cached_units``, by :func:`cached_units`), and ``units_per_token()`` is the
  ratio of routing units to engine tokens over the replies that reported prompt tokens
  (the live index's bound reads it; the policy's view carries it). ``undelivered`` takes
  back the index's belief that the worker holds a prompt that never reached it;
  ``forget_cache(i)`` drops all it believed ``i`` holds (a worker that went down).
* The prefix index is kept when the policy declares ``uses_index``, or when the caller
  asks for it (``keep_index=True``: the live router's hit-ratio telemetry and decision
  log read ``matched(req)`` whatever the policy). The policy's view holds the index only
  if the policy declared it.
* Exact sources: ``attach_exact(i, source)`` gives worker ``i`` an exact view of its
  cache (its engine's KV events); ``detach_exact(i)`` takes it back. ``matched`` and the
  policy's ``view.matched`` both read :class:`~kvroute.routing.cache_beliefs.CacheBeliefs`
  (``caches``): an in-sync exact source answers for its worker (with the prompts of the
  dispatches open there, which the engine will hold before anything routed after them
  runs), the approximate index for the others. Each dispatch keeps what the router
  expected the chosen worker to hold (``expected``), the most any allowed worker held
  (``available``) and whether the expectation was exact (``exact``), for the hit-rate
  telemetry.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

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
from kvroute.routing.cache_beliefs import CacheBeliefs, ExactCache
from kvroute.routing.prefix_index import DEFAULT_INDEX_CAPACITY, PrefixIndex

__all__ = ["Dispatch", "Router", "cached_units"]


@dataclass(eq=False)
class Dispatch:
    req: RouteRequest
    decision: Decision
    sent_at: float
    first_token_at: float | None = None
    closed: bool = False
    held: int = 0  # units of the prompt the approximate index believed the worker held
    expected: int = 0  # units the router believed the worker held (exact or approximate)
    available: int = 0  # the most units any allowed worker was believed to hold
    exact: bool = False  # ``expected`` came from an in-sync exact source
    waited: float = 0.0  # seconds it was held before routing (``hold``), set by the caller

    @property
    def worker(self) -> int:
        return self.decision.worker


class Router:
    def __init__(self, policy: RoutingPolicy, workers: int,
                 index_capacity: int = DEFAULT_INDEX_CAPACITY,
                 probes: Sequence[WorkerProbe] | None = None, *,
                 keep_index: bool = False) -> None:
        if workers < 1:
            raise ConfigError(f"a router needs at least one worker, got {workers}")
        self.policy = policy
        self.workers = [WorkerState(i) for i in range(workers)]
        self.index = (PrefixIndex(workers, index_capacity)
                      if policy.uses_index or keep_index else None)
        self.caches = CacheBeliefs(self.index, workers)
        self.view = ClusterView(self.workers, self.caches if policy.uses_index else None,
                                probes)
        self._next_rid = 0
        self._open: dict[Dispatch, None] = {}  # routed and not closed, in routing order
        self._prompt_units = 0  # over completions whose engine reported its prompt tokens
        self._prompt_tokens = 0

    @property
    def open_dispatches(self) -> int:
        """Dispatches routed and not yet closed."""
        return len(self._open)

    # --- membership and engine state ------------------------------------------------------
    def add_worker(self) -> int:
        """A new worker joins as the last one; its index."""
        k = len(self.workers)
        self.workers.append(WorkerState(k))
        self.caches.add_worker()
        self.policy.on_workers_changed(k + 1)
        return k

    def remove_worker(self, worker: int, now: float) -> list[Dispatch]:
        """Worker ``worker`` leaves (see the module doc); the dispatches closed on it."""
        if not 0 <= worker < len(self.workers):
            raise ConfigError(f"no worker {worker} among {len(self.workers)}")
        closed = [d for d in self._open if d.worker == worker]
        for d in closed:
            self.complete(d, now, ok=False)
        del self.workers[worker]
        for j, state in enumerate(self.workers):
            state.index = j
        self.caches.remove_worker(worker)
        for d in self._open:
            if d.worker > worker:
                d.decision = dataclasses.replace(d.decision, worker=d.worker - 1)
        self.policy.on_worker_removed(worker, len(self.workers))
        return closed

    def report_load(self, worker: int, *, running: int, waiting: int, kv_usage: float,
                    kv_capacity: int, max_running: int = 0, max_loras: int = 0) -> None:
        """What worker ``worker``'s engine says about itself (``WorkerState``'s second
        group): requests running and queued, the fraction of its KV pool in use, the
        pool's size in tokens (0: unknown), its cap on running requests and on distinct
        LoRA adapters running at once (0: none known). ValueError, and nothing changes, if
        a count is negative or the usage is not a finite number >= 0 (a gauge that reads
        NaN must not reach the policies)."""
        if min(running, waiting, kv_capacity, max_running, max_loras) < 0 \
                or not 0.0 <= kv_usage < math.inf:
            raise ValueError(f"worker {worker}'s engine load is not usable: running={running}, "
                             f"waiting={waiting}, kv_usage={kv_usage}, "
                             f"kv_capacity={kv_capacity}, max_running={max_running}, "
                             f"max_loras={max_loras}")
        state = self.workers[worker]
        state.running, state.waiting = running, waiting
        state.kv_usage, state.kv_capacity = kv_usage, kv_capacity
        state.max_running, state.max_loras = max_running, max_loras

    # --- the prefix index -----------------------------------------------------------------
    def matched(self, req: RouteRequest) -> np.ndarray:
        """Prefix units of ``req`` the router believes each worker holds (zeros without an
        index or exact source); computed once per request and shared with the policy's
        view, with the times its ``view.last_sent`` reads (the same walk of the index)."""
        if req._matched is None:
            req._matched, req._last_sent = self.caches.match_last_sent(req.units,
                                                                        adapter=req.adapter)
        return req._matched

    def attach_exact(self, worker: int, source: ExactCache) -> None:
        """Worker ``worker``'s cache is known exactly from ``source`` while it is in sync."""
        if not 0 <= worker < len(self.workers):
            raise ConfigError(f"no worker {worker} among {len(self.workers)}")
        self.caches.attach(worker, source)

    def detach_exact(self, worker: int) -> None:
        """Back to the approximate index for ``worker``."""
        self.caches.detach(worker)

    def forget_cache(self, worker: int) -> None:
        """The approximate index forgets all it believed ``worker`` holds (it went down and
        may come back restarted, with an empty cache); an exact source follows its engine."""
        self.caches.clear(worker)

    # --- routing and accounting -----------------------------------------------------------
    def hold(self, req: RouteRequest, now: float,
             allowed: Sequence[bool] | np.ndarray | None = None) -> bool:
        """Whether the policy holds ``req`` back for now (``RoutingPolicy.holds``). What
        the index matched for a held request is read again when it is routed. False when
        ``allowed`` allows no worker (routing it says so)."""
        if allowed is not None and not np.any(allowed):
            return False
        view = self.view
        view.now = now
        view.allow(allowed)
        held = self.policy.holds(req, view)
        if held:
            req.forget_matches()
        return held

    def route(self, req: RouteRequest, now: float,
              allowed: Sequence[bool] | np.ndarray | None = None) -> Dispatch:
        """Choose a worker for ``req`` among ``allowed`` (None: all); a request without an
        id gets a fresh one. ValueError when ``allowed`` allows no worker."""
        if req.rid < 0:
            req.rid = self._next_rid
        self._next_rid = max(self._next_rid, req.rid) + 1
        view = self.view
        view.now = now
        view.allow(allowed)
        decision = self.policy.route(req, view)
        w = decision.worker
        if not 0 <= w < len(self.workers) or (allowed is not None and not view.allowed[w]):
            raise ConfigError(f"policy {self.policy.name} chose worker {w}, which is not "
                              f"one of the {len(view.candidates())} allowed of "
                              f"{len(self.workers)}")
        state = self.workers[w]
        state.in_flight += 1
        state.prefill_units += len(req)
        if not req.streamed:
            state.unstreamed_units += len(req)
        state.routed += 1
        if req.adapter is not None:
            state.adapters[req.adapter] = state.adapters.get(req.adapter, 0) + 1
        expected = available = held = 0
        exact = False
        if not self.caches.blind:
            matched = self.matched(req)
            expected = int(matched[w])
            exact = self.caches.exact(w)
            available = int(np.maximum.reduce(matched if allowed is None
                                              else matched[view.candidates()]))
        if self.index is not None:
            held = self.caches.approx_match(req.units, w, req.adapter) if exact else expected
            self.index.record(w, req.units, now, req.adapter)
        d = Dispatch(req, decision, now, held=held, expected=expected, available=available,
                     exact=exact)
        self.caches.sent(w, id(d), req.units, req.adapter)
        self._open[d] = None
        return d

    def undelivered(self, dispatch: Dispatch) -> None:
        """The request never reached its worker (refused connection, rejected with an
        error status): the prefix index stops believing the worker holds its prompt."""
        if self.index is not None and not dispatch.closed:  # closed: the worker may be gone
            self.index.forget(dispatch.worker, dispatch.req.units, dispatch.held,
                              dispatch.sent_at, dispatch.req.adapter)

    def replied(self, dispatch: Dispatch, units: np.ndarray, now: float) -> None:
        """``dispatch`` (still open) is answered: ``units``, its prompt's units followed by
        its reply's as a continuation's prompt will hold them, are what the worker's cache
        holds after it. Recorded in the prefix index only for a policy that declares
        ``records_replies`` (the baselines' routers record prompts only)."""
        if self.index is not None and self.policy.records_replies and not dispatch.closed:
            self.index.record(dispatch.worker, units, now, dispatch.req.adapter)

    def first_token(self, dispatch: Dispatch, now: float) -> None:
        """The request's first token came back: it moves from prefill to decode."""
        if dispatch.closed or dispatch.first_token_at is not None:
            return
        dispatch.first_token_at = now
        state = self.workers[dispatch.worker]
        state.prefill_units -= len(dispatch.req)
        state.decode_units += len(dispatch.req)
        if not dispatch.req.streamed:  # a first token after all
            state.unstreamed_units -= len(dispatch.req)
        self.policy.on_first_token(dispatch.req.rid, dispatch.worker, now)

    def complete(self, dispatch: Dispatch, now: float, ok: bool = True,
                 ttft_s: float | None = None, cached_tokens: int | None = None,
                 prompt_tokens: int | None = None, output_tokens: int | None = None) -> bool:
        """Close ``dispatch`` and tell the policy; False when it was closed already.
        ``cached_tokens`` and ``prompt_tokens`` are the engine's counts, when it reports
        them: the policy gets the cached count in the router's units too
        (``Feedback.cached_units``). ``output_tokens``: the tokens it generated, when the
        reply says."""
        if dispatch.closed:
            return False
        dispatch.closed = True
        del self._open[dispatch]
        self.caches.done(dispatch.worker, id(dispatch))
        state = self.workers[dispatch.worker]
        state.in_flight -= 1
        adapter = dispatch.req.adapter
        if adapter is not None:
            left = state.adapters[adapter] - 1
            if left:
                state.adapters[adapter] = left
            else:
                del state.adapters[adapter]
        if dispatch.first_token_at is None:
            state.prefill_units -= len(dispatch.req)
            if not dispatch.req.streamed:
                state.unstreamed_units -= len(dispatch.req)
        else:
            state.decode_units -= len(dispatch.req)
        if ok:
            state.completed += 1
        else:
            state.errors += 1
        if prompt_tokens:
            self._prompt_units += len(dispatch.req)
            self._prompt_tokens += prompt_tokens
            self.view.units_per_token = self.units_per_token()
        self.view.now = now
        self.policy.on_complete(Feedback(
            worker=dispatch.worker, rid=dispatch.req.rid, ok=ok, prompt_units=len(dispatch.req),
            now=now, decision=dispatch.decision, e2e_s=now - dispatch.sent_at if ok else None,
            ttft_s=ttft_s if ttft_s is not None or dispatch.first_token_at is None
            else dispatch.first_token_at - dispatch.sent_at, cached_tokens=cached_tokens,
            cached_units=cached_units(cached_tokens, prompt_tokens, len(dispatch.req)),
            output_tokens=output_tokens))
        return True

    def units_per_token(self) -> float | None:
        """Routing units per engine token over the completed requests whose engine
        reported its prompt tokens (about 4 when the router keys on characters in front of
        a real tokenizer, 1 on token ids); None before any did."""
        return self._prompt_units / self._prompt_tokens if self._prompt_tokens else None


def cached_units(cached: int | None, prompt_tokens: int | None, units: int) -> int | None:
    """An engine's cached-token count in the router's units: scaled by the prompt's units
    over its tokens when the engine gave those, at most the prompt's units."""
    if cached is None or not prompt_tokens:
        return cached
    return min(units, round(cached * units / prompt_tokens))
