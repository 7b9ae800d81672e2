"""The router's upstream client: aiohttp's ClientSession against kvroute's ``Upstream``.

One instantly answering aiohttp worker runs in a subprocess (on uvloop) and serves
``POST /v1/completions``. This process, also on uvloop, sends it the same 1K-character
JSON body from ``--concurrency`` tasks for ``--seconds`` per measurement with each client,
interleaved, for ``--rounds`` rounds (the order alternates every round), after a short
warm-up of each. It prints, per client and round, the client process's CPU time per
request (``time.process_time()`` over the requests completed) and the request rate, then
the medians and the ratio aiohttp / Upstream.

The aiohttp client is set up as kvroute's router set it up (``ClientTimeout(total=...,
sock_connect=...)``, ``auto_decompress=True``, the default connector) and used the same
way (``await session.post(...)``, then ``read()`` inside ``async with``). With two or more
CPUs the worker and this process are pinned to different ones (``--no-pin`` to not).

    python benchmarks/upstream_bench.py [--seconds 3] [--rounds 3] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable

ANSWER = json.dumps({"id": "x", "object": "text_completion", "model": "m",
                     "choices": [{"index": 0, "text": " ok", "finish_reason": "length"}],
                     "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2,
                               "prompt_tokens_details": {"cached_tokens": 0}}}).encode()
BODY = json.dumps({"model": "m", "prompt": "x" * 1000, "max_tokens": 1}).encode()
HEADERS = [("Content-Type", "application/json"), ("Accept", "*/*"),
           ("User-Agent", "upstream-bench")]
PATH = "/v1/completions"


def serve_worker(port: int) -> None:
    """The instantly answering worker (run in a subprocess)."""
    import uvloop
    from aiohttp import web

    async def completion(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=ANSWER, content_type="application/json")

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post(PATH, completion)
    app.router.add_get("/health", health)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None,
                loop=uvloop.new_event_loop())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


Sender = Callable[[], Awaitable[None]]


async def measure(send: Sender, concurrency: int, seconds: float) -> tuple[float, float]:
    """(client CPU µs per request, requests per second) over ``seconds``."""
    done = 0
    stop = False

    async def loop() -> None:
        nonlocal done
        while not stop:
            await send()
            done += 1

    cpu0, t0 = time.process_time(), time.perf_counter()
    tasks = [asyncio.create_task(loop()) for _ in range(concurrency)]
    await asyncio.sleep(seconds)
    stop = True
    await asyncio.gather(*tasks)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
    return cpu / done * 1e6, done / wall


async def wait_ready(url: str, timeout: float = 20.0) -> None:
    from kvroute.server.upstream import Upstream, UpstreamError

    up = Upstream(connect_timeout=1.0, total_timeout=2.0)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                async with await up.request("GET", url, "/health") as r:
                    await r.read()
                    if r.status == 200:
                        return
            except UpstreamError:
                if time.monotonic() > deadline:
                    raise
            await asyncio.sleep(0.1)
    finally:
        await up.close()


async def bench(url: str, args: argparse.Namespace) -> None:
    import aiohttp

    from kvroute.server.upstream import Upstream

    await wait_ready(url)
    session = aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=60.0, sock_connect=5.0), auto_decompress=True)
    up = Upstream(connect_timeout=5.0, total_timeout=60.0)
    aio_headers = dict(HEADERS)

    async def via_aiohttp() -> None:
        r = await session.post(url + PATH, data=BODY, headers=aio_headers)
        async with r:
            data = await r.read()
        assert r.status == 200 and data == ANSWER

    async def via_upstream() -> None:
        r = await up.request("POST", url, PATH, BODY, HEADERS)
        async with r:
            data = await r.read()
        assert r.status == 200 and data == ANSWER

    clients: dict[str, Sender] = {"aiohttp": via_aiohttp, "Upstream": via_upstream}
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in clients}
    try:
        for send in clients.values():  # warm-up: open the connections, fill caches
            await measure(send, args.concurrency, 0.5)
        print(f"{'round':>5}  {'client':<9} {'CPU µs/req':>11} {'req/s':>9}")
        for rnd in range(args.rounds):
            order = list(clients) if rnd % 2 == 0 else list(reversed(clients))
            for name in order:
                cpu_us, rate = await measure(clients[name], args.concurrency, args.seconds)
                results[name].append((cpu_us, rate))
                print(f"{rnd + 1:>5}  {name:<9} {cpu_us:>11.1f} {rate:>9.0f}", flush=True)
    finally:
        await session.close()
        await up.close()
    print("\nmedian over rounds:")
    med = {name: (statistics.median(c for c, _ in rs), statistics.median(r for _, r in rs))
           for name, rs in results.items()}
    for name, (cpu_us, rate) in med.items():
        print(f"  {name:<9} {cpu_us:8.1f} µs CPU/request  {rate:8.0f} req/s")
    print(f"  CPU per request, aiohttp / Upstream: {med['aiohttp'][0] / med['Upstream'][0]:.2f}x"
          f"; saved {med['aiohttp'][0] - med['Upstream'][0]:.1f} µs per request")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--no-pin", action="store_true", help="do not pin the two processes")
    ap.add_argument("--serve", type=int, help=argparse.SUPPRESS)  # the worker subprocess
    args = ap.parse_args()
    if args.serve is not None:
        serve_worker(args.serve)
        return
    import uvloop

    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    pin = not args.no_pin and len(cpus) >= 2
    port = free_port()
    worker = subprocess.Popen([sys.executable, __file__, "--serve", str(port)],
                              stdin=subprocess.DEVNULL)
    try:
        if pin:
            os.sched_setaffinity(worker.pid, {cpus[1]})
            os.sched_setaffinity(0, {cpus[0]})
        print(f"worker pid {worker.pid} on port {port}; {args.concurrency} concurrent, "
              f"{args.seconds:g} s x {args.rounds} rounds per client; "
              f"{'pinned to CPUs ' + str(cpus[0]) + ' / ' + str(cpus[1]) if pin else 'not pinned'}")
        loop = uvloop.new_event_loop()
        try:
            loop.run_until_complete(bench(f"http://127.0.0.1:{port}", args))
        finally:
            loop.close()
    finally:
        worker.terminate()
        worker.wait(10)


if __name__ == "__main__":
    main()
