"""Workers behind the live router: membership, health, circuit breaker, and the policy view.

Contract:

* :class:`Membership` owns one :class:`~kvroute.routing.router.Router` whose worker ``i``
  is ``workers[i]`` (a :class:`Worker`: URL and health). Adding a worker appends a
  ``WorkerState`` and a prefix-index tenant and calls ``policy.on_workers_changed``.
  Removing one first closes, as failed, every dispatch still open on it (the HTTP request
  goes on; its accounting is closed exactly once), then deletes its state and index tenant
  and renumbers the later workers and the open dispatches that point at them.
* Health: a worker is *available* when its last health checks passed (``healthy``) and its
  circuit breaker is closed. ``failure_threshold`` consecutive request failures open the
  breaker: the worker is marked unhealthy for ``cooldown_s``; after that the next
  successful health check restores it (with health checks disabled, the breaker simply
  closes after the cool-down). ``failure_threshold`` consecutive failed health checks mark
  a worker unhealthy as well. When the breaker opens or a healthy worker turns unhealthy,
  the prefix index forgets what that worker was believed to cache.
* Routing only among available workers: the policy is wrapped in :class:`HealthFilter`.
  The policy decides over all members (its per-worker state stays indexed by membership);
  when it picks a worker that is unavailable or already failed for this request, the
  wrapper cancels that decision with the policy (``on_complete(ok=False)``: LBGR releases
  its queue reservation and learns nothing) and falls back to the allowed worker with the
  longest prefix match in the router's index, then the fewest in flight, then the lowest
  index (branch ``"fallback"``). The router then accounts the request on that worker.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from kvroute.errors import ConfigError
from kvroute.routing.base import (
    ClusterView,
    Decision,
    Feedback,
    RouteRequest,
    RoutingPolicy,
    WorkerState,
)
from kvroute.routing.router import Dispatch, Router

__all__ = ["HealthFilter", "Membership", "Worker", "normalize_url"]


def normalize_url(url: str) -> str:
    """``http(s)://host:port[/prefix]`` without a trailing slash; ConfigError otherwise."""
    u = url.strip().rstrip("/")
    if not (u.startswith("http://") or u.startswith("https://")) or len(u.split("://", 1)[1]) == 0:
        raise ConfigError(f"worker URL must start with http:// or https://, got {url!r}")
    return u


@dataclass(eq=False)
class Worker:
    url: str
    healthy: bool = True
    consecutive_failures: int = 0  # request failures in a row (the circuit breaker's count)
    health_failures: int = 0  # failed health checks in a row
    open_until: float = 0.0  # breaker open (worker excluded) until this router time
    removed: bool = False

    def available(self, now: float, health_checks: bool) -> bool:
        if self.removed or now < self.open_until:
            return False
        return self.healthy or not health_checks


class HealthFilter(RoutingPolicy):
    """Routes with ``inner`` but only ever returns a worker in ``allowed`` (see module doc)."""

    name = "health_filter"
    uses_index = True  # the fallback and the router's hit-ratio telemetry need the index

    def __init__(self, inner: RoutingPolicy) -> None:
        super().__init__(0)
        self.inner = inner
        self.allowed: Sequence[bool] = ()
        self._cancelled: set[int] = set()

    def route(self, req: RouteRequest, view: ClusterView) -> Decision:
        decision = self.inner.route(req, view)
        w = decision.worker
        if 0 <= w < len(self.allowed) and self.allowed[w]:
            return decision
        self.inner.on_complete(Feedback(worker=w, rid=req.rid, ok=False,
                                        prompt_units=len(req), now=view.now, decision=decision))
        self._cancelled.add(req.rid)
        matched = view.matched(req)
        load = view.in_flight()
        ok = [i for i in range(len(view)) if i < len(self.allowed) and self.allowed[i]]
        if not ok:
            raise ConfigError("no worker is allowed for this request")
        best = min(ok, key=lambda i: (-int(matched[i]), int(load[i]), i))
        return Decision(best, branch="fallback")

    def on_complete(self, fb: Feedback) -> None:
        if fb.rid in self._cancelled:
            self._cancelled.discard(fb.rid)
            return
        self.inner.on_complete(fb)

    def on_workers_changed(self, count: int) -> None:
        self.inner.on_workers_changed(count)

    def on_worker_removed(self, index: int, count: int) -> None:
        self.inner.on_worker_removed(index, count)


class Membership:
    def __init__(self, urls: Sequence[str], policy: RoutingPolicy, *,
                 failure_threshold: int = 3, cooldown_s: float = 30.0,
                 health_checks: bool = True) -> None:
        if not urls:
            raise ConfigError("the router needs at least one worker URL")
        if failure_threshold < 1 or cooldown_s < 0:
            raise ConfigError("failure threshold must be >= 1 and cool-down >= 0 s")
        norm = [normalize_url(u) for u in urls]
        if len(set(norm)) != len(norm):
            raise ConfigError("duplicate worker URL in --worker-urls")
        self.workers = [Worker(u) for u in norm]
        self.policy = HealthFilter(policy)
        self.router = Router(self.policy, len(self.workers))
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self.health_checks = health_checks
        self.open: set[Dispatch] = set()  # routed, not yet closed
        self.dispatch_worker: dict[Dispatch, Worker] = {}

    # --- lookup -----------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.workers)

    def find(self, url: str) -> int | None:
        u = url.strip().rstrip("/")
        for i, w in enumerate(self.workers):
            if w.url == u:
                return i
        return None

    def available(self, now: float) -> list[bool]:
        return [w.available(now, self.health_checks) for w in self.workers]

    def any_available(self, now: float) -> bool:
        return any(self.available(now))

    # --- routing ----------------------------------------------------------------------
    def route(self, req: RouteRequest, now: float, exclude: set[str]) -> Dispatch | None:
        """Route among available workers not in ``exclude`` (URLs); None when there is none."""
        allowed = [a and w.url not in exclude
                   for a, w in zip(self.available(now), self.workers, strict=True)]
        if not any(allowed):
            return None
        self.policy.allowed = allowed
        try:
            d = self.router.route(req, now)
        finally:
            self.policy.allowed = ()
        self.open.add(d)
        self.dispatch_worker[d] = self.workers[d.worker]
        return d

    def worker_of(self, d: Dispatch) -> Worker:
        return self.dispatch_worker[d]

    def close(self, d: Dispatch, now: float, ok: bool, ttft_s: float | None = None,
              cached_tokens: int | None = None) -> bool:
        """Close ``d`` in the router; False when it was already closed (nothing done)."""
        if d.closed:
            self.open.discard(d)
            self.dispatch_worker.pop(d, None)
            return False
        self.router.complete(d, now, ok=ok, ttft_s=ttft_s, cached_tokens=cached_tokens)
        self.open.discard(d)
        self.dispatch_worker.pop(d, None)
        return True

    # --- health -----------------------------------------------------------------------
    def record_success(self, w: Worker) -> None:
        w.consecutive_failures = 0

    def record_failure(self, w: Worker, now: float) -> bool:
        """Count a request failure; True when it opened the breaker."""
        w.consecutive_failures += 1
        if w.consecutive_failures >= self.failure_threshold and now >= w.open_until:
            w.open_until = now + self.cooldown_s
            w.healthy = False
            self._forget_cache(w)
            w.consecutive_failures = 0
            return True
        return False

    def _forget_cache(self, w: Worker) -> None:
        """The prefix index forgets what it believed ``w`` cached: a worker that went down
        may come back restarted, with an empty cache."""
        if self.router.index is not None and not w.removed:
            self.router.index.clear(self.workers.index(w))

    def record_health(self, w: Worker, ok: bool, now: float) -> None:
        if ok:
            w.health_failures = 0
            if now >= w.open_until:
                w.healthy = True
        else:
            w.health_failures += 1
            if w.health_failures >= self.failure_threshold and w.healthy:
                w.healthy = False
                self._forget_cache(w)

    # --- membership changes -----------------------------------------------------------
    def add(self, url: str) -> Worker:
        u = normalize_url(url)
        if self.find(u) is not None:
            raise ConfigError(f"worker {u} is already a member")
        w = Worker(u)
        self.workers.append(w)
        r = self.router
        r.workers.append(WorkerState(len(r.workers)))
        if r.index is not None:
            r.index.add_worker()
        self.policy.on_workers_changed(len(self.workers))
        return w

    def remove(self, url: str, now: float,
               on_forced_close: Callable[[Dispatch, Worker], None] | None = None) -> Worker:
        """Remove ``url``; its open dispatches are closed as failed first (callback each)."""
        k = self.find(url)
        if k is None:
            raise ConfigError(f"worker {url.strip().rstrip('/')} is not a member")
        w = self.workers[k]
        for d in [d for d in self.open if self.dispatch_worker.get(d) is w]:
            if on_forced_close is not None:
                on_forced_close(d, w)
            self.close(d, now, ok=False)
        w.removed = True
        r = self.router
        del self.workers[k]
        del r.workers[k]
        for j, state in enumerate(r.workers):
            state.index = j
        if r.index is not None:
            r.index.remove_worker(k)
        for d in self.open:
            if d.decision.worker > k:
                d.decision = dataclasses.replace(d.decision, worker=d.decision.worker - 1)
        self.policy.on_worker_removed(k, len(self.workers))
        return w

    def in_flight(self) -> np.ndarray:
        return np.array([s.in_flight for s in self.router.workers], dtype=np.int64)


async def wait_idle(m: Membership, timeout: float, poll: float = 0.05) -> bool:
    """Wait until no dispatch is open (True) or ``timeout`` seconds pass (False)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while m.open:
        if loop.time() >= end:
            return False
        await asyncio.sleep(poll)
    return True
