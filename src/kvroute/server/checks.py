"""Periodic checks of the live router's workers: health, and the load their engines report.

Contract:

* ``WorkerChecks(members, router, upstream, timeout, clock)``; each method is one round over
  every worker, the requests concurrent, each bounded by ``timeout`` seconds. The router
  app runs them every ``health_interval`` / ``metrics_interval`` seconds.
* ``check_health()``: ``GET {url}/health``; status 200 passes, anything else (an error
  status, a refused connection, a timeout) fails. Each result goes to
  ``Membership.record_health`` (see :mod:`kvroute.server.membership` for what it does).
* ``scrape_engines()``: ``GET {url}/metrics``, parsed by
  :func:`kvroute.server.engine_metrics.engine_load`; the load (running, waiting, KV usage
  and capacity, the cap on running requests, else ``max_running``) goes to
  ``Router.report_load``, where policies such as ``llmd`` and ``least_load`` read it;
  with ``units_per_kv_token``, the router's prefix index holds at most the engine's KV
  pool for it, times the routing units a token: measured from the engines' reported
  prompt tokens once any completed request carried them (``Router.units_per_token``),
  ``units_per_kv_token`` until then. A worker whose page cannot be read or lacks those
  gauges keeps its last values (zeros at first) and is warned about once, until it is
  readable again.
* A worker removed while its check is under way is skipped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from kvroute.routing.router import Router
from kvroute.server.engine_metrics import EngineLoad, engine_load
from kvroute.server.membership import Membership, Worker
from kvroute.server.upstream import Upstream, UpstreamError, UpstreamResponse

__all__ = ["WorkerChecks"]

log = logging.getLogger("kvroute.server")


class WorkerChecks:
    def __init__(self, members: Membership, router: Router, upstream: Upstream,
                 timeout: float, clock: Callable[[], float],
                 units_per_kv_token: float | None = None, max_running: int = 0) -> None:
        self.members = members
        self.max_running = max_running  # where an engine reports no cap (0: none known)
        self.units_per_kv_token = units_per_kv_token
        self.router = router
        self.upstream = upstream
        self.timeout = timeout
        self.clock = clock
        self._unreadable: set[str] = set()  # workers whose /metrics we warned about

    async def _get(self, w: Worker, path: str) -> UpstreamResponse:
        """``GET {w.url}{path}`` within the check timeout."""
        return await self.upstream.request("GET", w.url, path, timeout=self.timeout)

    async def check_health(self) -> None:
        """One round of ``GET {url}/health`` on every worker."""
        workers = list(self.members.workers)

        async def probe(w: Worker) -> bool:
            try:
                async with await self._get(w, "/health") as r:
                    await r.read()
                    return r.status == 200
            except UpstreamError:
                return False

        results = await asyncio.gather(*(probe(w) for w in workers))
        now = self.clock()
        for w, ok in zip(workers, results, strict=True):
            self.members.record_health(w, ok, now)

    async def scrape_engines(self) -> None:
        """One round of ``GET {url}/metrics`` on every worker, into ``Router.report_load``."""
        workers = list(self.members.workers)

        async def scrape(w: Worker) -> EngineLoad | str:
            try:
                async with await self._get(w, "/metrics") as r:
                    text = await r.text()
                    if r.status != 200:
                        return f"HTTP {r.status}"
                    return engine_load(text) or "no SGLang or vLLM load gauges"
            except UpstreamError as e:
                return str(e)
            except ValueError as e:
                return f"unparsable ({e})"

        results = await asyncio.gather(*(scrape(w) for w in workers))
        for w, got in zip(workers, results, strict=True):
            if w.removed:
                continue
            if isinstance(got, str):
                if w.url not in self._unreadable:
                    self._unreadable.add(w.url)
                    log.warning("engine load of %s unavailable: %s (policies that read it see "
                                "zeros)", w.url, got)
                continue
            self._unreadable.discard(w.url)
            i = self.members.workers.index(w)
            self.router.report_load(i, running=got.running, waiting=got.waiting,
                                    kv_usage=got.kv_usage, kv_capacity=got.kv_capacity,
                                    max_running=got.max_running or self.max_running)
            index = self.router.index
            if index is not None and self.units_per_kv_token and got.kv_capacity > 0:
                per = self.router.units_per_token() or self.units_per_kv_token
                index.set_capacity(i, max(1, int(got.kv_capacity * per)))
