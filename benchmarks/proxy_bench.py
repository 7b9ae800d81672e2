"""The router's overhead: added latency, CPU per request and the chain's maximum rate.

Two instantly answering workers (separate processes) serve ``/v1/completions``. The same
client measures, in one run and interleaved (the order rotates every round):

- the workers hit directly;
- ``kvroute serve`` in front of them, for each ``--policies``;
- SGLang's Rust router in front of them, for each ``--sglang-policies`` (with
  ``--sglang-router PATH``; skipped when not given);
- vLLM's Rust router in front of them, for each ``--vllm-policies`` (with
  ``--vllm-router PATH``; skipped when not given).

It reports three numbers:

- latency p50 and p99 at concurrency 1, for 1K- and 8K-character prompts, and the added
  p50 (router minus direct);
- the router process's CPU time per request (utime + stime of all its threads, from
  /proc) while it runs at its maximum rate; the same measure for every router;
- the maximum request rate at concurrency 64.

With ``--load RATE`` it measures instead at the same offered load for every router, the
way a deployment runs: 4 emulated workers (``kvroute worker --emulate``, fast), GSP
prompts (groups sharing a prefix, as text) through the chat API, streamed with 32 output
tokens, open loop at RATE requests/s for ``--load-seconds``, rounds interleaved; per
router, the CPU per request (its process's utime + stime over the run / requests) and
its resident memory at the end (the prefix index at steady state). Target (issue 16):
CPU per request and RSS at or below sglang-router's.

Targets (issue 5): added p50 under 1 ms; CPU per request within 2x of sglang-router's
(the ratio is printed); at least 2,000 requests/s through the whole chain. The client is
Python too (kvroute's lean keep-alive client, ``kvroute.server.upstream``, on uvloop, the
same for every target) and shares the machine's cores, so the maximum rate is a lower
bound.

The reference routers install from PyPI; keep them out of kvroute's venv::

    python3 -m venv /tmp/rvenv && /tmp/rvenv/bin/pip install sglang-router
    python3 -m venv /tmp/vvenv && /tmp/vvenv/bin/pip install vllm-router
    python benchmarks/proxy_bench.py --sglang-router /tmp/rvenv/bin/sglang-router \\
        --vllm-router /tmp/vvenv/bin/vllm-router

Without those options it compares kvroute with the direct calls only. With
``--kvroute-baseline SRC`` it also runs kvroute from another source tree (say the
``src/`` of ``git worktree add /tmp/old OLDCOMMIT``), interleaved with the rest: a
before/after in one run. The references run
as ``sglang-router launch ... --log-level warn`` and ``vllm-router ... --log-level
warning``, each with its own Prometheus port (both default to 29000: a second instance
on the same port panics at startup). Their logs, and kvroute's, go to temporary files
whose last lines are printed if one does not come up.

The stand-in workers answer what the routers probe at startup: ``/health`` and
``/health_generate``; ``/model_info`` and ``/server_info`` (and the older ``/get_*``
forms) without a ``model_path``, so sglang-router loads no tokenizer; ``/v1/models``; and
``/metrics`` with SGLang's load gauges (kvroute scrapes it every second). sglang-router
also probes each worker for gRPC with an HTTP/2 preface, which aiohttp rejects; the
router then settles on HTTP (the workers' log of that rejection is silenced). A router
is measured once its ``GET /workers`` lists every worker as healthy and a completion
through it succeeds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import IO

import numpy as np

ANSWER = json.dumps({"id": "x", "object": "text_completion", "model": "m",
                     "choices": [{"index": 0, "text": " ok", "finish_reason": "length"}],
                     "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2,
                               "prompt_tokens_details": {"cached_tokens": 0}}}).encode()
# What SGLang's /model_info and /server_info say, minus the model: with no model_path or
# tokenizer_path, sglang-router does not try to download a tokenizer.
MODEL_INFO = {"model_path": None, "tokenizer_path": None, "is_generation": True}
SERVER_INFO = {"model_path": None, "tokenizer_path": None, "dp_size": 1, "tp_size": 1}
MODELS = {"object": "list", "data": [{"id": "m", "object": "model", "owned_by": "bench"}]}
METRICS = ("# TYPE sglang:num_running_reqs gauge\nsglang:num_running_reqs 0\n"
           "# TYPE sglang:num_queue_reqs gauge\nsglang:num_queue_reqs 0\n"
           "# TYPE sglang:token_usage gauge\nsglang:token_usage 0\n"
           "# TYPE sglang:max_total_num_tokens gauge\nsglang:max_total_num_tokens 100000\n")


def serve_worker(port: int) -> None:
    """An engine that answers everything at once (run as a separate process)."""
    import logging

    from aiohttp import web

    # sglang-router's gRPC probe (an HTTP/2 preface) gets a 400; do not log a traceback.
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)

    async def completion(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=ANSWER, content_type="application/json")

    def fixed(payload: object) -> web.RequestHandler:
        body = json.dumps(payload).encode()

        async def handler(request: web.Request) -> web.Response:
            return web.Response(body=body, content_type="application/json")
        return handler

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(text=METRICS, content_type="text/plain")

    app = web.Application()
    app.router.add_post("/v1/completions", completion)
    app.router.add_get("/metrics", metrics)
    for paths, payload in ((("/health", "/health_generate"), {"status": "ok"}),
                           (("/model_info", "/get_model_info"), MODEL_INFO),
                           (("/server_info", "/get_server_info"), SERVER_INFO),
                           (("/v1/models",), MODELS)):
        for path in paths:
            app.router.add_get(path, fixed(payload))
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None,
                loop=new_loop())


def new_loop() -> asyncio.AbstractEventLoop:
    """uvloop's when installed: the client and the stand-in workers should cost as little
    CPU as they can, since they share the machine with the router under test."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


_TAKEN: set[int] = set()


def free_port() -> int:
    """A free loopback port, never the same one twice in a run."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _TAKEN:
            _TAKEN.add(port)
            return port


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process (all its threads)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Target:
    name: str
    url: str
    proc: subprocess.Popen[bytes] | None = None
    log: IO[bytes] | None = None
    results: dict[str, list[float]] = field(default_factory=dict)

    def add(self, key: str, value: float) -> None:
        self.results.setdefault(key, []).append(value)

    def log_tail(self, lines: int = 30) -> str:
        if self.log is None:
            return ""
        self.log.flush()
        with open(self.log.name, "rb") as fh:
            text = fh.read().decode(errors="replace")
        return "\n".join(text.splitlines()[-lines:])


def launch(name: str, cmd: list[str], port: int, pythonpath: str | None = None) -> Target:
    log = tempfile.NamedTemporaryFile(prefix="proxy_bench_", suffix=".log", delete=False)  # noqa: SIM115
    env = None if pythonpath is None else dict(os.environ, PYTHONPATH=pythonpath)
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env=env)
    return Target(name, f"http://127.0.0.1:{port}", proc, log)


async def wait_ready(t: Target, n_workers: int, timeout: float) -> None:
    """Until the router lists every worker as healthy (``GET /workers``: sglang-router's
    and vllm-router's ``is_healthy``, kvroute's ``healthy``) and one completion through it
    succeeds. The direct target only needs ``/health``."""
    import aiohttp

    body = json.dumps({"model": "m", "prompt": "ready?", "max_tokens": 1}).encode()
    deadline = time.monotonic() + timeout
    why = "no answer"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
        while time.monotonic() < deadline:
            if t.proc is not None and t.proc.poll() is not None:
                raise RuntimeError(f"{t.name} exited with status {t.proc.returncode}; "
                                   f"the end of its log:\n{t.log_tail()}")
            try:
                if t.proc is None:
                    async with http.get(t.url + "/health") as r:
                        if r.status == 200:
                            return
                        why = f"/health: {r.status}"
                else:
                    async with http.get(t.url + "/workers") as r:
                        listed = (await r.json(content_type=None)).get("workers", []) \
                            if r.status == 200 else None
                    healthy = n_workers if listed is None else sum(
                        1 for w in listed if w.get("is_healthy", w.get("healthy")))
                    if healthy < n_workers:
                        why = f"/workers: {healthy} of {n_workers} healthy"
                    else:
                        async with http.post(t.url + "/v1/completions", data=body,
                                             headers={"Content-Type": "application/json"}) as r:
                            await r.read()
                            if r.status == 200:
                                return
                            why = f"/v1/completions: {r.status}"
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as e:
                why = repr(e)
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{t.name} ({t.url}) not ready after {timeout:.0f} s ({why}); "
                       f"the end of its log:\n{t.log_tail()}")


HEADERS = [("Content-Type", "application/json")]


async def latencies(url: str, prompt: str, n: int) -> np.ndarray:
    """Latency of ``n`` sequential requests, ms (the first tenth dropped as warm-up)."""
    from kvroute.server.upstream import Upstream

    body = json.dumps({"model": "m", "prompt": prompt, "max_tokens": 1}).encode()
    out = []
    http = Upstream(connect_timeout=10, total_timeout=60)
    try:
        for _ in range(n):
            t = time.perf_counter()
            r = await http.request("POST", url, "/v1/completions", body, HEADERS)
            await r.read()
            assert r.status == 200, r.status
            out.append(time.perf_counter() - t)
    finally:
        await http.close()
    return np.array(out[n // 10:]) * 1000


async def max_rate(url: str, prompt: str, seconds: float, pid: int | None,
                   concurrency: int = 64) -> tuple[float, float | None]:
    """Requests per second at ``concurrency``, and the router's CPU us per request."""
    from kvroute.server.upstream import Upstream

    body = json.dumps({"model": "m", "prompt": prompt, "max_tokens": 1}).encode()
    done = 0
    stop = time.perf_counter() + seconds
    http = Upstream(connect_timeout=10, total_timeout=60)

    async def client() -> None:
        nonlocal done
        while time.perf_counter() < stop:
            r = await http.request("POST", url, "/v1/completions", body, HEADERS)
            await r.read()
            assert r.status == 200, r.status
            done += 1

    try:
        cpu0 = cpu_seconds(pid) if pid else 0.0
        t = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - t
        cpu = (cpu_seconds(pid) - cpu0) / done * 1e6 if pid else None
    finally:
        await http.close()
    return done / elapsed, cpu


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def gsp_chat_prompts(n: int) -> list[str]:
    """GSP prompts (shared system prompt per group, random order) as chat text."""
    from kvroute.workloads.gsp import GSPConfig, generate_gsp
    from kvroute.workloads.tokenizer import pseudo_text

    groups = max(1, n // 32)
    stream = generate_gsp(GSPConfig(groups=groups, prompts_per_group=32))
    return [pseudo_text(p) for p in stream.prompts[:n]]


async def offered_load(url: str, prompts: list[str], rate: float, seconds: float,
                       pid: int | None) -> dict[str, float]:
    """Open loop at ``rate`` for ``seconds``: streamed chat requests; the router's CPU per
    request and RSS at the end; failures counted."""
    import aiohttp

    ok = failed = 0
    lat: list[float] = []

    async def one(prompt: str, http: aiohttp.ClientSession) -> None:
        nonlocal ok, failed
        body = {"model": "m", "stream": True, "max_tokens": 32,
                "messages": [{"role": "user", "content": prompt}]}
        t = time.perf_counter()
        try:
            async with http.post(url + "/v1/chat/completions", json=body) as r:
                data = await r.read()
            if r.status == 200 and data.rstrip().endswith(b"data: [DONE]"):
                ok += 1
                lat.append(time.perf_counter() - t)
            else:
                failed += 1
        except (aiohttp.ClientError, asyncio.TimeoutError):
            failed += 1

    n = int(rate * seconds)
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn,
                                     timeout=aiohttp.ClientTimeout(total=120)) as http:
        cpu0 = cpu_seconds(pid) if pid else 0.0
        t0 = time.perf_counter()
        tasks = []
        for k in range(n):
            await asyncio.sleep(max(0.0, t0 + k / rate - time.perf_counter()))
            tasks.append(asyncio.create_task(one(prompts[k % len(prompts)], http)))
        await asyncio.gather(*tasks)
        cpu = (cpu_seconds(pid) - cpu0) / max(ok, 1) * 1e3 if pid else float("nan")
    return {"ok": ok, "failed": failed, "cpu_ms": cpu,
            "rss_mib": rss_mib(pid) if pid else float("nan"),
            "e2e_p50_ms": float(np.percentile(lat, 50)) * 1000 if lat else float("nan")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--serve-worker", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--policies", default="round_robin,cache_aware,lbgr",
                    help="kvroute policies")
    ap.add_argument("--sglang-router", metavar="PATH",
                    help="sglang-router executable (pip install sglang-router)")
    ap.add_argument("--sglang-policies", default="round_robin,cache_aware",
                    help="sglang-router policies")
    ap.add_argument("--vllm-router", metavar="PATH",
                    help="vllm-router executable (pip install vllm-router)")
    ap.add_argument("--vllm-policies", default="round_robin", help="vllm-router policies")
    ap.add_argument("--kvroute-baseline", metavar="SRC",
                    help="also run kvroute from this source tree (its PYTHONPATH, e.g. the "
                         "src/ of an older checkout), for each --policies, as "
                         "'kvroute-baseline POLICY': before/after in one run")
    ap.add_argument("--requests", type=int, default=400,
                    help="sequential requests per latency measurement")
    ap.add_argument("--seconds", type=float, default=3.0, help="per maximum-rate measurement")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved repetitions")
    ap.add_argument("--startup-timeout", type=float, default=120.0,
                    help="seconds each router may take to list every worker healthy")
    ap.add_argument("--json", metavar="PATH", help="also write every round's numbers here")
    ap.add_argument("--load", type=float, metavar="RATE",
                    help="measure at this offered load (requests/s) instead (see above)")
    ap.add_argument("--load-seconds", type=float, default=60.0)
    ap.add_argument("--load-workers", type=int, default=4)
    args = ap.parse_args()
    if args.serve_worker:
        serve_worker(args.serve_worker)
        return
    workers: list[subprocess.Popen[bytes]] = []
    targets: list[Target] = []
    try:
        wports = [free_port() for _ in range(args.load_workers if args.load else 2)]
        for p in wports:
            workers.append(subprocess.Popen(
                [sys.executable, "-m", "kvroute", "worker", "--emulate", "--speed", "50",
                 "--port", str(p)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                if args.load else
                subprocess.Popen([sys.executable, __file__, "--serve-worker", str(p)]))
        urls = [f"http://127.0.0.1:{p}" for p in wports]
        if not args.load:
            targets.append(Target("direct", urls[0]))
        for src, label in ((None, "kvroute"), (args.kvroute_baseline, "kvroute-baseline")):
            if label != "kvroute" and not src:
                continue
            for pol in args.policies.split(","):
                port = free_port()
                targets.append(launch(f"{label} {pol}", [
                    sys.executable, "-m", "kvroute", "serve", "--worker-urls", *urls,
                    "--policy", pol, "--port", str(port)], port, pythonpath=src))
        refs = ((args.sglang_router, args.sglang_policies, "sglang-router",
                 ["launch"], "warn"),
                (args.vllm_router, args.vllm_policies, "vllm-router", [], "warning"))
        for exe, policies, label, sub, level in refs:
            if not exe:
                continue
            for pol in policies.split(","):
                port = free_port()
                targets.append(launch(f"{label} {pol}", [
                    exe, *sub, "--worker-urls", *urls, "--policy", pol,
                    "--host", "127.0.0.1", "--port", str(port),
                    "--prometheus-host", "127.0.0.1", "--prometheus-port", str(free_port()),
                    "--log-level", level], port))

        async def run() -> None:
            for t in targets:
                await wait_ready(t, len(urls), args.startup_timeout)
            if args.load:
                prompts = gsp_chat_prompts(int(args.load * args.load_seconds))
                for r in range(args.rounds):
                    k = r % len(targets)
                    for t in targets[k:] + targets[:k]:
                        got = await offered_load(t.url, prompts, args.load, args.load_seconds,
                                                 t.proc.pid if t.proc else None)
                        for key, v in got.items():
                            t.add(key, v)
                    print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
                return
            for r in range(args.rounds):
                k = r % len(targets)
                for t in targets[k:] + targets[:k]:
                    for size in (1000, 8000):
                        lat = await latencies(t.url, "x" * size, args.requests)
                        t.add(f"p50_{size}", float(np.percentile(lat, 50)))
                        t.add(f"p99_{size}", float(np.percentile(lat, 99)))
                    rate, cpu = await max_rate(t.url, "x" * 1000, args.seconds,
                                               t.proc.pid if t.proc else None)
                    t.add("rate", rate)
                    if cpu is not None:
                        t.add("cpu_us", cpu)
                print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)

        loop = new_loop()
        try:
            loop.run_until_complete(run())
        finally:
            loop.close()
    finally:
        procs = [t.proc for t in targets if t.proc] + workers
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for t in targets:
            if t.log is not None:
                t.log.close()
                with contextlib.suppress(OSError):
                    os.unlink(t.log.name)
    (report_load if args.load else report)(targets, args)


def report_load(targets: list[Target], args: argparse.Namespace) -> None:
    print(f"{'target':<26}{'ok':>8}{'failed':>8}{'CPU ms/req':>12}{'RSS MiB':>10}"
          f"{'E2E p50 ms':>12}   (each round)")
    for t in targets:
        rounds = range(len(t.results.get("ok", [])))
        print(f"{t.name:<26}" + "; ".join(
            f"{t.results['ok'][i]:>6.0f}{t.results['failed'][i]:>8.0f}"
            f"{t.results['cpu_ms'][i]:>12.2f}{t.results['rss_mib'][i]:>10.0f}"
            f"{t.results['e2e_p50_ms'][i]:>12.0f}" for i in rounds))
    print(f"({args.load:g} requests/s for {args.load_seconds:g} s a round, streamed chat, "
          f"32 output tokens, {args.load_workers} emulated workers; CPU and RSS are the "
          "router process's)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({t.name: t.results for t in targets}, fh, indent=1)


def report(targets: list[Target], args: argparse.Namespace) -> None:
    med = {t.name: {m: float(np.median(v)) for m, v in t.results.items()} for t in targets}
    direct = med["direct"]
    print(f"{'target':<26}{'p50 1K':>9}{'p99 1K':>9}{'p50 8K':>9}{'p99 8K':>9}"
          f"{'+p50 1K':>9}{'+p50 8K':>9}{'CPU us/req':>12}{'max req/s':>11}")
    for name, m in med.items():
        add1 = m["p50_1000"] - direct["p50_1000"]
        add8 = m["p50_8000"] - direct["p50_8000"]
        cpu = f"{m['cpu_us']:.0f}" if "cpu_us" in m else "-"
        print(f"{name:<26}{m['p50_1000']:>9.3f}{m['p99_1000']:>9.3f}{m['p50_8000']:>9.3f}"
              f"{m['p99_8000']:>9.3f}{add1:>9.3f}{add8:>9.3f}{cpu:>12}{m['rate']:>11,.0f}")
    print(f"(ms; medians of {args.rounds} interleaved rounds; +p50 = added over direct; "
          f"CPU = the router process's, at the maximum rate)")
    cpu = {name: m["cpu_us"] for name, m in med.items() if "cpu_us" in m}
    refs = {n: c for n, c in cpu.items() if n.startswith("sglang-router")}
    for name, c in cpu.items():
        if not name.startswith("kvroute"):
            continue
        pol = name.split(" ", 1)[1]
        ref = next((n for n in (f"sglang-router {pol}", "sglang-router round_robin")
                    if n in refs), None)
        if ref:
            print(f"CPU {name} / {ref}: {c / refs[ref]:.2f}x (target <= 2x)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({t.name: t.results for t in targets}, fh, indent=1)


if __name__ == "__main__":
    main()
