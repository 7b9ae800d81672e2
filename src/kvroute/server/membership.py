"""The live router's workers as HTTP endpoints: URLs, health and circuit breakers.

Contract:

* :class:`Membership` keeps one :class:`Worker` record (URL, health, breaker) per worker of
  a :class:`~kvroute.routing.router.Router`, in the router's order: ``workers[i]`` is the
  HTTP side of ``router.workers[i]``. It is what adds and removes the router's workers in
  the live router, so the two lists never disagree: ``add(url)`` appends a record and
  calls ``router.add_worker()``; ``remove(url, now)`` calls ``router.remove_worker(i,
  now)``, which closes the dispatches still open there as failed (the HTTP requests go
  on), drops the record, and returns it with those dispatches.
* Health: a worker is *available* when its last health checks passed (``healthy``) and its
  circuit breaker is closed. ``failure_threshold`` consecutive request failures open the
  breaker: the worker is marked unhealthy for ``cooldown_s``; after that the next
  successful health check restores it (with health checks disabled, the breaker simply
  closes after the cool-down). ``failure_threshold`` consecutive failed health checks mark
  a worker unhealthy as well. When the breaker opens or a healthy worker turns unhealthy,
  ``router.forget_cache(i)``: it may come back restarted, with an empty cache.
* ``allowed(now, exclude)`` is the mask for ``Router.route``: the available workers whose
  URL is not in ``exclude``. Membership never sees the routing policy or a request.
* Data-parallel ranks: ``URL@R`` (R a rank number, as SGLang's router writes a DP rank)
  is rank R of the engine at ``URL``, a worker of its own (its own KV cache): requests
  go to ``Worker.base`` with ``X-data-parallel-rank: R`` (``RANK_HEADER``, which
  vLLM's OpenAI server reads), its health and ``/metrics`` come from ``base`` (the rank's
  series: :mod:`kvroute.server.engine_metrics`), and its KV events from the feed named
  for it (vLLM publishes rank R on the base port + R). An engine's health check speaks
  for all its ranks; request failures open one rank's breaker.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import numpy as np

from kvroute.errors import ConfigError
from kvroute.protocol.request_body import RANK_HEADER
from kvroute.routing.router import Dispatch, Router

__all__ = ["Membership", "Worker", "normalize_url", "split_rank", "with_ranks", "worker_urls"]

log = logging.getLogger("kvroute.server")

_RANK = re.compile(r"@(\d+)$")


def split_rank(url: str) -> tuple[str, int | None]:
    """``URL@R`` as ``(URL, R)``; a URL without a rank as ``(URL, None)``."""
    m = _RANK.search(url)
    return (url[:m.start()], int(m.group(1))) if m else (url, None)


def with_ranks(urls: Sequence[str], ranks: int) -> list[str]:
    """Each URL as its engine's ``ranks`` data-parallel ranks, ``URL@0 .. URL@ranks-1``
    (one rank: as given); ConfigError for a URL that names a rank already."""
    if ranks == 1:
        return list(urls)
    for u in urls:
        if split_rank(u.strip())[1] is not None:
            raise ConfigError(f"{u!r} names a rank already: give engine URLs with --dp-size, "
                              "or URL@R for each rank without it")
    return [f"{u.strip().rstrip('/')}@{r}" for u in urls for r in range(ranks)]


def normalize_url(url: str) -> str:
    """``http(s)://host:port[/prefix][@rank]`` without a trailing slash (before the rank);
    ConfigError otherwise."""
    base, rank = split_rank(url.strip())
    return _normalize_base(base) + ("" if rank is None else f"@{rank}")


def _normalize_base(url: str) -> str:
    u = url.strip()
    if not (u.startswith("http://") or u.startswith("https://")):
        raise ConfigError(f"worker URL must start with http:// or https://, got {url!r}")
    try:
        parts = urlsplit(u)
        parts.port  # noqa: B018 - raises on a port that is not a number in range
    except ValueError as e:
        raise ConfigError(f"worker URL {url!r} is not valid: {e}") from None
    if not parts.hostname:
        raise ConfigError(f"worker URL {url!r} has no host; expected e.g. "
                          "http://127.0.0.1:30000")
    return u.rstrip("/")


def worker_urls(urls: Sequence[str]) -> list[str]:
    """The router's starting workers, normalized; ConfigError when there is none, one is
    not an http(s) URL, or two are the same."""
    if not urls:
        raise ConfigError("the router needs at least one worker URL")
    for u in urls:
        if re.search(r",\s*https?://", u):
            raise ConfigError(f"worker URLs are separated by spaces, not commas: {u!r}")
    norm = [normalize_url(u) for u in urls]
    if len(set(norm)) != len(norm):
        raise ConfigError("duplicate worker URL in --worker-urls")
    return norm


@dataclass(eq=False)
class Worker:
    url: str  # what identifies it: its base URL, with "@R" for rank R of a DP engine
    healthy: bool = True
    consecutive_failures: int = 0  # request failures in a row (the circuit breaker's count)
    health_failures: int = 0  # failed health checks in a row
    open_until: float = 0.0  # breaker open (worker excluded) until this router time
    removed: bool = False

    def __post_init__(self) -> None:
        self.base, self.rank = split_rank(self.url)  # where requests go, and for which rank

    def headers(self) -> list[tuple[str, str]]:
        """The headers that address this worker at ``base``: its rank's, if it has one."""
        return [] if self.rank is None else [(RANK_HEADER, str(self.rank))]

    def available(self, now: float, health_checks: bool) -> bool:
        if self.removed or now < self.open_until:
            return False
        return self.healthy or not health_checks


class Membership:
    def __init__(self, urls: Sequence[str], router: Router, *, failure_threshold: int = 3,
                 cooldown_s: float = 30.0, health_checks: bool = True) -> None:
        if failure_threshold < 1 or not cooldown_s >= 0:  # NaN fails too
            raise ConfigError("failure threshold must be >= 1 and cool-down >= 0 s")
        norm = worker_urls(urls)
        if len(norm) != len(router.workers):
            raise ValueError(f"{len(norm)} URLs for a router of {len(router.workers)} workers")
        self.workers = [Worker(u) for u in norm]
        self._router = router
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self.health_checks = health_checks

    # --- lookup -----------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.workers)

    def find(self, url: str) -> int | None:
        base, rank = split_rank(url.strip())
        u = base.strip().rstrip("/") + ("" if rank is None else f"@{rank}")
        for i, w in enumerate(self.workers):
            if w.url == u:
                return i
        return None

    def available(self, now: float) -> list[bool]:
        return [w.available(now, self.health_checks) for w in self.workers]

    def allowed(self, now: float, exclude: Collection[str] = ()) -> np.ndarray:
        """Available and not in ``exclude`` (URLs), per worker: the mask to route with."""
        return np.array([w.available(now, self.health_checks) and w.url not in exclude
                         for w in self.workers], dtype=bool)

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

    def record_health(self, w: Worker, ok: bool, now: float) -> None:
        """A health check's result; a change of state is logged (warning when a worker
        turns unhealthy, info when it comes back)."""
        if ok:
            w.health_failures = 0
            if now >= w.open_until and not w.healthy:
                w.healthy = True
                log.info("worker %s is healthy again: routing to it", w.url)
        else:
            w.health_failures += 1
            if w.health_failures >= self.failure_threshold and w.healthy:
                w.healthy = False
                self._forget_cache(w)
                log.warning("worker %s is unhealthy (%d failed health checks): routing "
                            "around it", w.url, w.health_failures)

    def _forget_cache(self, w: Worker) -> None:
        if not w.removed:
            self._router.forget_cache(self.workers.index(w))

    # --- membership changes -----------------------------------------------------------
    def add(self, url: str) -> Worker:
        u = normalize_url(url)
        if self.find(u) is not None:
            raise ConfigError(f"worker {u} is already a member")
        w = Worker(u)
        self.workers.append(w)
        self._router.add_worker()
        return w

    def remove(self, url: str, now: float) -> tuple[Worker, list[Dispatch]]:
        """Remove ``url``; its record and the dispatches the router closed on it."""
        k = self.find(url)
        if k is None:
            raise ConfigError(f"worker {url.strip()} is not a member")
        closed = self._router.remove_worker(k, now)
        w = self.workers.pop(k)
        w.removed = True
        return w, closed
