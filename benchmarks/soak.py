"""Soak and chaos: the live router under a steady load for a long time, workers killed.

Starts ``--workers`` emulated workers (``kvroute worker --emulate``, fast) and ``kvroute
serve`` in front of them as separate processes on loopback, then sends chat requests
open loop at ``--rate`` per second for ``--minutes``: each prompt is one of 64 shared
system prompts (1-4K characters) plus a fresh question, streamed, 32 output tokens.
Every 10 s it samples the router's resident memory (``/proc/PID/status``). With
``--chaos`` a random worker is killed (SIGKILL) every ``--kill-every`` seconds and
restarted on its port 5 s later.

Reports: requests sent, failed before any byte (non-streaming failures), streams cut
midway (with the router's SSE error event), latency percentiles, and the router's RSS
over time with its spread after the first sixth of the run (target: within 10%, and 0
failed requests without chaos).

    python benchmarks/soak.py [--minutes 30] [--rate 200] [--workers 4] [--chaos]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import numpy as np


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_worker(port: int, speed: float) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "kvroute", "worker", "--emulate",
                             "--port", str(port), "--speed", str(speed)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def wait_ready(session: aiohttp.ClientSession, url: str, deadline_s: float = 30) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            async with session.get(f"{url}/health") as r:
                if r.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.2)
    raise SystemExit(f"soak: {url} did not become healthy")


async def one(session: aiohttp.ClientSession, url: str, prompt: str,
              stats: dict[str, list[float] | int]) -> None:
    body = {"model": "m", "stream": True, "max_tokens": 32,
            "messages": [{"role": "user", "content": prompt}]}
    t0 = time.monotonic()
    got_any = False
    try:
        async with session.post(f"{url}/v1/chat/completions", json=body) as r:
            if r.status != 200:
                stats["failed"] += 1  # type: ignore[operator]
                return
            done = cut = False
            async for line in r.content:
                got_any = True
                if line.startswith(b"data: [DONE]"):
                    done = True
                elif b'"error"' in line:
                    cut = True
            if done and not cut:
                stats["e2e"].append(time.monotonic() - t0)  # type: ignore[union-attr]
            else:
                stats["cut"] += 1  # type: ignore[operator]
    except (aiohttp.ClientError, asyncio.TimeoutError):
        stats["cut" if got_any else "failed"] += 1  # type: ignore[operator]


async def run(args: argparse.Namespace) -> dict[str, object]:
    rng = random.Random(1)
    ports = [free_port() for _ in range(args.workers)]
    workers = {p: start_worker(p, args.speed) for p in ports}
    router_port = free_port()
    router = subprocess.Popen([sys.executable, "-m", "kvroute", "serve", "--policy",
                               args.policy, "--port", str(router_port), "--worker-urls",
                               *[f"http://127.0.0.1:{p}" for p in ports]],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{router_port}"
    systems = ["".join(rng.choice("abcdefghij klmnopqrstuvwxyz") for _ in
                       range(rng.randint(1000, 4000))) for _ in range(64)]
    stats: dict[str, list[float] | int] = {"e2e": [], "failed": 0, "cut": 0}
    rss: list[tuple[float, float]] = []
    kills = 0
    timeout = aiohttp.ClientTimeout(total=120)
    conn = aiohttp.TCPConnector(limit=0)
    try:
        async with aiohttp.ClientSession(timeout=timeout, connector=conn) as session:
            for p in ports:
                await wait_ready(session, f"http://127.0.0.1:{p}")
            await wait_ready(session, url)
            t0 = time.monotonic()
            end = t0 + 60 * args.minutes
            next_sample, next_kill = t0, t0 + args.kill_every
            tasks: set[asyncio.Task[None]] = set()
            sent = 0
            while (now := time.monotonic()) < end:
                if now >= next_sample:
                    rss.append((now - t0, rss_mib(router.pid)))
                    next_sample += 10
                    print(f"{now - t0:6.0f} s  sent {sent:,}  failed {stats['failed']}  "
                          f"cut {stats['cut']}  router RSS {rss[-1][1]:.0f} MiB", flush=True)
                if args.chaos and now >= next_kill:
                    victim = rng.choice(ports)
                    workers[victim].send_signal(signal.SIGKILL)
                    kills += 1
                    asyncio.get_running_loop().call_later(
                        5, lambda v=victim: workers.__setitem__(v, start_worker(v, args.speed)))
                    next_kill += args.kill_every
                prompt = f"{rng.choice(systems)}\n\nquestion {sent}: {rng.random()}"
                task = asyncio.create_task(one(session, url, prompt, stats))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                sent += 1
                await asyncio.sleep(max(0.0, t0 + sent / args.rate - time.monotonic()))
            await asyncio.gather(*tasks)
            rss.append((time.monotonic() - t0, rss_mib(router.pid)))
    finally:
        router.send_signal(signal.SIGTERM)
        for w in workers.values():
            w.send_signal(signal.SIGTERM)
        router.wait(30)
    e2e = np.array(stats["e2e"])
    settled = [m for t, m in rss if t >= 60 * args.minutes / 6]
    spread = (max(settled) / min(settled) - 1) if settled else float("nan")
    return {"minutes": args.minutes, "rate": args.rate, "workers": args.workers,
            "chaos": args.chaos, "kills": kills, "sent": sent, "ok": len(e2e),
            "failed_before_any_byte": stats["failed"], "streams_cut": stats["cut"],
            "e2e_p50_s": float(np.percentile(e2e, 50)) if len(e2e) else None,
            "e2e_p99_s": float(np.percentile(e2e, 99)) if len(e2e) else None,
            "rss_mib": rss, "rss_spread_after_first_sixth": spread}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--rate", type=float, default=200)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--speed", type=float, default=50, help="emulated GPUs this much faster")
    ap.add_argument("--policy", default="cache_aware")
    ap.add_argument("--chaos", action="store_true", help="kill and restart workers")
    ap.add_argument("--kill-every", type=float, default=30)
    ap.add_argument("--json", help="write the result here")
    args = ap.parse_args()
    out = asyncio.run(run(args))
    summary = {k: v for k, v in out.items() if k != "rss_mib"}
    print(json.dumps(summary, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
