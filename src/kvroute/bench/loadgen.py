"""The drivers of ``kvroute bench``: a workload's requests sent over HTTP
(:mod:`kvroute.bench.client`), timed.

Contract:

* Every request of the workload that is sent gives exactly one
  :class:`~kvroute.bench.results.RequestResult`, ok or not: nothing is lost.
  ``--duration`` stops *sending*; requests in flight finish.
* Times are seconds from the start of the run on a :class:`Clock`: by default the event
  loop's monotonic clock (:class:`LoopClock`); tests inject their own. ``scheduled`` is
  when the workload wanted the request sent (the open loop's arrival, rebased so the
  first request goes at 0), ``sent`` when it was.
* Drivers: open loop (each request at its arrival: the driver sleeps on the clock until
  then, starts the request and goes on; one whose ``after`` names an earlier request is
  sent once that one is answered and ``pace`` seconds after it was sent), open loop with
  ``concurrency`` (N workers pull the next request when they finish), closed loop (N
  clients each take the next unstarted session and send its turns in order, waiting for
  each reply plus the workload's think time).
* :func:`run_bench` checks the endpoint, scrapes the engines' counters
  (:mod:`kvroute.bench.scrape`), runs the workload and scrapes again.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Iterable, Iterator
from itertools import islice
from typing import Any, Protocol

import aiohttp

from kvroute.bench.client import check_endpoint, send_one
from kvroute.bench.config import BenchConfig
from kvroute.bench.results import BenchRun, RequestResult
from kvroute.bench.scrape import scrape_metrics
from kvroute.workloads.request import ClosedLoop, Request, Workload

__all__ = ["Clock", "LoopClock", "run_bench", "run_workload"]


class Clock(Protocol):
    """Where the drivers read the time and wait."""

    def now(self) -> float: ...  # seconds, monotonic

    async def sleep(self, seconds: float) -> None: ...


class LoopClock:
    """The running event loop's monotonic clock."""

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def _cut_sessions(sessions: list[list[Request]], n: int | None) -> list[list[Request]]:
    if n is None:
        return sessions
    out: list[list[Request]] = []
    left = n
    for s in sessions:
        if left <= 0:
            break
        out.append(s[:left])
        left -= len(out[-1])
    return out


def _planned(workload: Workload, n: int | None) -> int | None:
    size = workload.size
    if size is None:
        return n
    return size if n is None else min(size, n)


async def run_workload(workload: Workload, cfg: BenchConfig, model: str | None = None,
                       on_result: Callable[[RequestResult], None] | None = None,
                       clock: Clock | None = None) -> BenchRun:
    """Send ``workload`` to ``cfg.url`` with the driver its shape and ``cfg`` call for."""
    clk = clock or LoopClock()
    results: list[RequestResult] = []
    connector = aiohttp.TCPConnector(limit=0)  # the driver, not the pool, bounds concurrency
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=None)) as http:
        t0 = clk.now()

        def now() -> float:
            return clk.now() - t0

        def stopped() -> bool:
            return cfg.duration is not None and now() >= cfg.duration

        async def send(req: Request, scheduled: float, client: int) -> None:
            res = await send_one(http, cfg, model, req, now, scheduled, client)
            results.append(res)
            if on_result is not None:
                on_result(res)

        if isinstance(workload, ClosedLoop):
            mode, n = "closed", cfg.concurrency or workload.concurrency
            sessions = iter(_cut_sessions(workload.sessions, cfg.requests))

            async def client(cid: int) -> None:
                for session in sessions:  # shared: each client takes the next session
                    for k, req in enumerate(session):
                        if k and workload.think_time:
                            await clk.sleep(workload.think_time)
                        if stopped():
                            return
                        await send(req, now(), cid)

            await asyncio.gather(*(client(c) for c in range(n)))
        elif cfg.concurrency:
            mode, n = "open-concurrency", cfg.concurrency
            pending: Iterator[Request] = islice(iter(workload), cfg.requests)

            async def worker(cid: int) -> None:
                for req in pending:  # shared iterator: the next request, when free
                    if stopped():
                        return
                    await send(req, now(), cid)

            await asyncio.gather(*(worker(c) for c in range(n)))
        else:
            mode, n = "open", None
            await _open_loop(islice(iter(workload), cfg.requests), cfg, now, clk.sleep,
                             send)
    return BenchRun(results, _planned(workload, cfg.requests), now(), mode, n, model)


async def _open_loop(requests: Iterable[Request], cfg: BenchConfig, now: Callable[[], float],
                     sleep: Callable[[float], Awaitable[None]],
                     send: Callable[[Request, float, int], Any]) -> None:
    tasks: set[asyncio.Task[None]] = set()
    by_rid: dict[int, asyncio.Task[None]] = {}  # the requests in flight, by rid
    sent_at: dict[int, float] = {}  # when each request was sent
    first: float | None = None

    async def start(req: Request, at: float) -> None:
        sent_at[req.rid] = now()
        await send(req, at, -1)

    async def after(parent: asyncio.Task[None] | None, req: Request, at: float) -> None:
        if parent is not None:
            await asyncio.wait([parent])  # its outcome is the parent's result, not ours
        delay = sent_at[req.after] + req.pace - now()  # at its user's pace
        if delay > 0:
            await sleep(delay)
        await start(req, at)

    for req in requests:
        if first is None:
            first = req.arrival
        at = req.arrival - first
        if cfg.duration is not None and at >= cfg.duration:
            break
        delay = at - now()
        if delay > 0:
            await sleep(delay)
        follows = req.after in sent_at or req.after in by_rid
        task = asyncio.create_task(after(by_rid.get(req.after), req, at) if follows
                                   else start(req, at))
        tasks.add(task)
        by_rid[req.rid] = task
        task.add_done_callback(tasks.discard)
        task.add_done_callback(functools.partial(_forget, by_rid, req.rid))
    while tasks:
        await asyncio.gather(*tasks)


def _forget(by_rid: dict[int, asyncio.Task[None]], rid: int, task: asyncio.Task[None]) -> None:
    by_rid.pop(rid, None)


async def run_bench(workload: Workload, cfg: BenchConfig,
                    on_result: Callable[[RequestResult], None] | None = None) -> BenchRun:
    """Check the endpoint, scrape ``/metrics``, run the workload, scrape again."""
    found = await check_endpoint(cfg.url, min(cfg.timeout, 10.0))
    model = cfg.model or found
    before = await scrape_metrics(cfg.metrics_urls)
    run = await run_workload(workload, cfg, model, on_result)
    run.metrics_before = before
    run.metrics_after = await scrape_metrics(cfg.metrics_urls)
    return run
