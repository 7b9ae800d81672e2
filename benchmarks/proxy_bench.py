"""The router's overhead: added latency, CPU per request and the chain's maximum rate.

Two instantly answering workers (separate processes) serve ``/v1/completions``. The same
client measures, in one run and interleaved:

- the workers hit directly;
- ``kvroute serve`` in front of them, for each ``--policies``;
- sglang-router in front of them (``--sglang-router PATH`` to its executable, e.g. from
  ``pip install sglang-router`` in a separate venv; skipped when not given).

It reports three numbers:

- latency p50 and p99 at concurrency 1, for 1K- and 8K-character prompts, and the added
  p50 (router minus direct);
- the router process's CPU time per request (utime + stime from /proc);
- the maximum request rate at concurrency 64.

Targets (issue 5): added p50 under 1 ms; CPU per request within 2x of sglang-router's;
at least 2,000 requests/s through the whole chain. The client is Python too and shares
this machine's 2 cores, so the maximum rate is a lower bound.

    python benchmarks/proxy_bench.py [--sglang-router /path/to/venv/bin/sglang-router]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time

import numpy as np

ANSWER = json.dumps({"id": "x", "object": "text_completion", "model": "m",
                     "choices": [{"index": 0, "text": " ok", "finish_reason": "length"}],
                     "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2,
                               "prompt_tokens_details": {"cached_tokens": 0}}}).encode()


def serve_worker(port: int) -> None:
    """An engine that answers everything at once (run as a separate process)."""
    from aiohttp import web

    async def completion(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=ANSWER, content_type="application/json")

    async def ok(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "data": [{"id": "m"}]})

    app = web.Application()
    app.router.add_post("/v1/completions", completion)
    for path in ("/health", "/health_generate", "/v1/models", "/get_model_info",
                 "/get_server_info"):
        app.router.add_get(path, ok)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def wait_up(url: str, timeout: float = 120.0) -> None:
    import aiohttp

    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            try:
                async with http.get(url + "/health") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


async def latencies(url: str, prompt: str, n: int) -> np.ndarray:
    import aiohttp

    body = json.dumps({"model": "m", "prompt": prompt, "max_tokens": 1}).encode()
    out = []
    async with aiohttp.ClientSession(headers={"Content-Type": "application/json"}) as http:
        for _ in range(n):
            t = time.perf_counter()
            async with http.post(url + "/v1/completions", data=body) as r:
                await r.read()
                assert r.status == 200, r.status
            out.append(time.perf_counter() - t)
    return np.array(out[n // 10:]) * 1000  # ms, warm-up dropped


async def max_rate(url: str, prompt: str, seconds: float, concurrency: int = 64) -> float:
    import aiohttp

    body = json.dumps({"model": "m", "prompt": prompt, "max_tokens": 1}).encode()
    done = 0
    stop = time.perf_counter() + seconds

    async def client(http: aiohttp.ClientSession) -> None:
        nonlocal done
        while time.perf_counter() < stop:
            async with http.post(url + "/v1/completions", data=body) as r:
                await r.read()
            done += 1

    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=conn,
                                     headers={"Content-Type": "application/json"}) as http:
        t = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
        return done / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--serve-worker", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--policies", default="round_robin,cache_aware,lbgr")
    ap.add_argument("--sglang-router", help="path to the sglang-router executable")
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=2, help="interleaved repetitions")
    args = ap.parse_args()
    if args.serve_worker:
        serve_worker(args.serve_worker)
        return
    procs: list[subprocess.Popen[bytes]] = []
    try:
        wports = [free_port() for _ in range(2)]
        for p in wports:
            procs.append(subprocess.Popen([sys.executable, __file__, "--serve-worker", str(p)]))
        workers = [f"http://127.0.0.1:{p}" for p in wports]
        targets: dict[str, tuple[str, int | None]] = {"direct": (workers[0], None)}
        for pol in args.policies.split(","):
            port = free_port()
            proc = subprocess.Popen([sys.executable, "-m", "kvroute", "serve", "--worker-urls",
                                     *workers, "--policy", pol, "--port", str(port)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append(proc)
            targets[f"kvroute {pol}"] = (f"http://127.0.0.1:{port}", proc.pid)
        if args.sglang_router:
            for pol in ("round_robin", "cache_aware"):
                port = free_port()
                proc = subprocess.Popen([args.sglang_router, "launch", "--worker-urls",
                                         *workers, "--policy", pol, "--port", str(port),
                                         "--log-level", "warn"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                procs.append(proc)
                targets[f"sglang-router {pol}"] = (f"http://127.0.0.1:{port}", proc.pid)

        async def run() -> dict[str, dict[str, list[float]]]:
            for url, _ in targets.values():
                await wait_up(url)
            res: dict[str, dict[str, list[float]]] = {k: {} for k in targets}
            for _ in range(args.rounds):
                for name, (url, pid) in targets.items():
                    row = res[name]
                    for size in (1000, 8000):
                        lat = await latencies(url, "x" * size, args.requests)
                        row.setdefault(f"p50_{size}", []).append(float(np.percentile(lat, 50)))
                        row.setdefault(f"p99_{size}", []).append(float(np.percentile(lat, 99)))
                    cpu0 = cpu_seconds(pid) if pid else 0.0
                    rate = await max_rate(url, "x" * 1000, args.seconds)
                    row.setdefault("rate", []).append(rate)
                    if pid:
                        used = cpu_seconds(pid) - cpu0
                        row.setdefault("cpu_us", []).append(used / (rate * args.seconds) * 1e6)
            return res

        res = asyncio.run(run())
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=10)
    med = {k: {m: float(np.median(v)) for m, v in row.items()} for k, row in res.items()}
    direct = med["direct"]
    print(f"{'target':<26}{'p50 1K':>9}{'p99 1K':>9}{'p50 8K':>9}{'p99 8K':>9}"
          f"{'+p50 1K':>9}{'+p50 8K':>9}{'CPU us/req':>12}{'max req/s':>11}")
    for name, m in med.items():
        add1 = m["p50_1000"] - direct["p50_1000"]
        add8 = m["p50_8000"] - direct["p50_8000"]
        cpu = f"{m['cpu_us']:.0f}" if "cpu_us" in m else "-"
        print(f"{name:<26}{m['p50_1000']:>9.3f}{m['p99_1000']:>9.3f}{m['p50_8000']:>9.3f}"
              f"{m['p99_8000']:>9.3f}{add1:>9.3f}{add8:>9.3f}{cpu:>12}{m['rate']:>11,.0f}")
    print(f"(ms; medians of {args.rounds} interleaved rounds; +p50 = added over direct)")


if __name__ == "__main__":
    main()
