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
  and capacity, the caps on running requests and on LoRA adapters running at once,
  else ``max_running`` and ``max_loras``) goes to
  ``Router.report_load``, where policies such as ``llmd`` and ``least_load`` read it;
  with ``units_per_kv_token``, the router's prefix index holds at most the engine's KV
  pool for it, times the routing units a token: measured from the engines' reported
  prompt tokens once any completed request carried them (``Router.units_per_token``),
  ``units_per_kv_token`` until then. A worker whose page cannot be read or lacks those
  gauges keeps its last values (zeros at first) and is warned about once, until it is
  readable again.
* The ranks of a data-parallel engine (``URL@R`` workers) are checked at their base URL,
  once per round for all of them: one ``/health`` answer and one ``/metrics`` page, from
  which each rank reads its own series (``engine_load(text, rank, ranks)``).
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
                 units_per_kv_token: float | None = None, max_running: int = 0,
                 max_loras: int = 0) -> None:
        self.members = members
        self.max_running = max_running  # where an engine reports no cap (0: none known)
        self.max_loras = max_loras  # likewise for LoRA adapters running at once
        self.units_per_kv_token = units_per_kv_token
        self.router = router
        self.upstream = upstream
        self.timeout = timeout
        self.clock = clock
        self._unreadable: set[str] = set()  # workers whose /metrics we warned about

    async def _get(self, base: str, path: str) -> UpstreamResponse:
        """``GET {base}{path}`` within the check timeout."""
        return await self.upstream.request("GET", base, path, timeout=self.timeout)

    def _bases(self) -> tuple[list[Worker], list[str]]:
        """The workers now, and their base URLs, each once (a DP engine's ranks share one)."""
        workers = list(self.members.workers)
        return workers, list(dict.fromkeys(w.base for w in workers))

    async def check_health(self) -> None:
        """One round of ``GET {base}/health`` on every worker."""
        workers, bases = self._bases()

        async def probe(base: str) -> bool:
            try:
                async with await self._get(base, "/health") as r:
                    await r.read()
                    return r.status == 200
            except UpstreamError:
                return False

        ok = dict(zip(bases, await asyncio.gather(*(probe(b) for b in bases)), strict=True))
        now = self.clock()
        for w in workers:
            self.members.record_health(w, ok[w.base], now)

    async def scrape_engines(self) -> None:
        """One round of ``GET {base}/metrics`` on every worker, into ``Router.report_load``."""
        workers, bases = self._bases()

        async def page(base: str) -> str | Exception:
            try:
                async with await self._get(base, "/metrics") as r:
                    text = await r.text()
                    return text if r.status == 200 else UpstreamError(f"HTTP {r.status}")
            except UpstreamError as e:
                return e

        pages = dict(zip(bases, await asyncio.gather(*(page(b) for b in bases)), strict=True))
        ranks: dict[str, int] = {}
        for w in workers:
            ranks[w.base] = ranks.get(w.base, 0) + 1

        def load(w: Worker) -> EngineLoad | str:
            text = pages[w.base]
            if isinstance(text, Exception):
                return str(text)
            try:
                got = engine_load(text, w.rank, ranks[w.base])
            except ValueError as e:
                return f"unparsable ({e})"
            rank = "" if w.rank is None else f" for rank {w.rank}"
            return got or f"no SGLang or vLLM load gauges{rank}"

        for w in workers:
            got = load(w)
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
                                    max_running=got.max_running or self.max_running,
                                    max_loras=got.max_loras or self.max_loras)
            index = self.router.index
            if index is not None and self.units_per_kv_token and got.kv_capacity > 0:
                per = self.router.units_per_token() or self.units_per_kv_token
                index.set_capacity(i, max(1, int(got.kv_capacity * per)))
