"""kvroute's request router in Ray Serve, on a laptop: three emulated engines (the
simulator's SimWorker, sped up) behind one deployment, an HTTP ingress in front, and a
short load of prompts that share long prefixes sent through Serve's HTTP proxy. For each
router it prints the prefix-cache hit rate (the engines' own caches) and TTFT (on the
engines), beside Ray's ``PrefixCacheAffinityRouter`` and Serve's default router.

    pip install 'kvroute[ray]'
    python examples/ray_serve_app.py --requests 120 --concurrency 12

Client -> Serve HTTP proxy -> Ingress replica -> its handle's request router (the one
being compared) -> one of three EmulatedReplica replicas.
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import ray
from ray import serve
from ray.exceptions import RayActorError

from kvroute.integrations.ray_replica import ServePrompt, emulated_deployment
from kvroute.integrations.ray_serve import KvrouteRequestRouter

try:  # the public path needs ray[llm]'s pyarrow; the class is the same
    from ray.serve.llm.request_router import PrefixCacheAffinityRouter
except ImportError:
    from ray.llm._internal.serve.routing_policies.prefix_aware.prefix_aware_router import (
        PrefixCacheAffinityRouter,
    )

ROUTERS: dict[str, tuple[Any, dict[str, Any]]] = {
    "kvroute:cache_aware": (KvrouteRequestRouter, {"policy": "cache_aware"}),
    "kvroute:lbgr": (KvrouteRequestRouter, {"policy": "lbgr"}),
    "ray:PrefixCacheAffinityRouter": (PrefixCacheAffinityRouter, {}),
    "ray:default (power of two)": (None, {}),
}


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=1000)
class Ingress:
    """POST {"prompt": ..., "max_tokens": ...}: the engine's answer as JSON. A request
    that was running on a replica that died is sent again (Serve does not retry it)."""

    def __init__(self, engines: Any) -> None:
        self.engines = engines

    async def __call__(self, request: Any) -> dict[str, Any]:
        body = await request.json()
        prompt = ServePrompt(body["prompt"], int(body.get("max_tokens", 16)))
        for attempt in range(3):
            try:
                out: dict[str, Any] = await self.engines.remote(prompt)
                return out
            except RayActorError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")


def workload(n: int, groups: int, seed: int) -> list[dict[str, Any]]:
    """``n`` prompts in ``groups`` families: a long shared system prompt, then a question."""
    rng = random.Random(seed)
    systems = [f"System {g}: you answer questions about topic {g}. " * 30 for g in range(groups)]
    return [{"prompt": systems[rng.randrange(groups)] + f"Question {i}: what about {i}?",
             "max_tokens": rng.randint(8, 48)} for i in range(n)]


def post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    req = urllib.request.Request(url, json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=120) as resp:
        out: dict[str, Any] = json.loads(resp.read())
    out["client_s"] = time.perf_counter() - t0
    return out


def run_one(name: str, args: argparse.Namespace, prompts: list[dict[str, Any]]) -> dict[str, Any]:
    router_class, kwargs = ROUTERS[name]
    engines = emulated_deployment(3, router_class, kwargs).options(
        ray_actor_options={"num_cpus": 0}).bind(speed=args.speed, capacity=args.capacity)
    serve.run(Ingress.bind(engines), name="demo", route_prefix="/")
    url = f"http://127.0.0.1:{args.port}/"
    post(url, {"prompt": "warm up", "max_tokens": 1})
    with ThreadPoolExecutor(args.concurrency) as pool:
        outs = list(pool.map(lambda b: post(url, b), prompts))
    serve.delete("demo")
    ttft = np.array([o["ttft_s"] for o in outs])
    return {"router": name,
            "hit_rate": sum(o["cached_tokens"] for o in outs) / sum(o["prompt_tokens"]
                                                                    for o in outs),
            "ttft_mean_ms": 1e3 * ttft.mean(), "ttft_p99_ms": 1e3 * np.quantile(ttft, 0.99),
            "client_mean_ms": 1e3 * np.mean([o["client_s"] for o in outs]),
            "replicas_used": len({o["replica"] for o in outs})}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=120)
    ap.add_argument("--groups", type=int, default=6, help="prompt families (shared prefixes)")
    ap.add_argument("--concurrency", type=int, default=12)
    ap.add_argument("--speed", type=float, default=4.0, help="engine speed-up over real time")
    ap.add_argument("--capacity", type=int, default=6000, help="KV pool per engine, tokens")
    ap.add_argument("--port", type=int, default=0, help="HTTP port (0: a free one)")
    ap.add_argument("--routers", default=",".join(ROUTERS),
                    help=f"comma-separated, from: {', '.join(ROUTERS)}")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    if args.port == 0:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            args.port = s.getsockname()[1]
    ray.init(include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": args.port})
    prompts = workload(args.requests, args.groups, args.seed)
    rows = [run_one(name.strip(), args, prompts) for name in args.routers.split(",")]
    print(f"\n{args.requests} requests, {args.groups} prefix families, concurrency "
          f"{args.concurrency}, 3 replicas (TTFT on the engines; client: end to end)")
    print(f"{'router':32} {'hit rate':>8} {'TTFT mean':>10} {'TTFT p99':>9} {'client':>8}")
    for r in rows:
        print(f"{r['router']:32} {r['hit_rate']:8.3f} {r['ttft_mean_ms']:8.1f}ms "
              f"{r['ttft_p99_ms']:7.1f}ms {r['client_mean_ms']:6.1f}ms")
    serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()
