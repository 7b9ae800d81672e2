"""Decision overhead, hit rate and TTFT of the kvroute request router inside Ray Serve,
against Ray's own ``PrefixCacheAffinityRouter``, on the same app: three emulated engines
(SimWorker, sped up) behind one deployment, called through a deployment handle in this
process (so its request router runs here and is timed here).

Decision overhead: the wall time of each ``choose_replicas`` call (the router's own work
per routing attempt; Serve's probing and sending are outside it). Hit rate: the engines'
cached over prompt tokens. TTFT: on the engines, from arrival to first token. Client: the
handle call, end to end.

    PYTHONPATH=src:benchmarks python benchmarks/ray_serve_bench.py [--requests 300]
"""

from __future__ import annotations

import argparse
import random
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import ray
from ray import serve

from kvroute.integrations.ray_replica import ServePrompt, emulated_deployment
from kvroute.integrations.ray_serve import KvrouteRequestRouter
from ray_timing import LIVE, TimedMixin

try:  # the public path needs ray[llm]'s pyarrow; the class is the same
    from ray.serve.llm.request_router import PrefixCacheAffinityRouter
except ImportError:
    from ray.llm._internal.serve.routing_policies.prefix_aware.prefix_aware_router import (
        PrefixCacheAffinityRouter,
    )


class TimedKvroute(TimedMixin, KvrouteRequestRouter):
    pass


class TimedPrefixCacheAffinity(TimedMixin, PrefixCacheAffinityRouter):
    pass


ROUTERS: dict[str, tuple[Any, dict[str, Any]]] = {
    "kvroute:cache_aware": (TimedKvroute, {"policy": "cache_aware"}),
    "kvroute:lbgr": (TimedKvroute, {"policy": "lbgr"}),
    "ray:PrefixCacheAffinityRouter": (TimedPrefixCacheAffinity, {}),
}


def workload(n: int, groups: int, seed: int) -> list[ServePrompt]:
    rng = random.Random(seed)
    systems = [f"System {g}: you answer questions about topic {g}. " * 30 for g in range(groups)]
    return [ServePrompt(systems[rng.randrange(groups)] + f"Question {i}: what about {i}?",
                        rng.randint(8, 48)) for i in range(n)]


def run_one(name: str, args: argparse.Namespace, prompts: list[ServePrompt]) -> dict[str, Any]:
    cls, kwargs = ROUTERS[name]
    app = emulated_deployment(3, cls, kwargs).options(ray_actor_options={"num_cpus": 0}).bind(
        speed=args.speed, capacity=args.capacity)
    handle = serve.run(app, name="bench", route_prefix=None)
    handle.remote(ServePrompt("warm up", 1)).result()
    LIVE[-1].decisions_s.clear()

    def call(p: ServePrompt) -> dict[str, Any]:
        t0 = time.perf_counter()
        out: dict[str, Any] = handle.remote(p).result()
        out["client_s"] = time.perf_counter() - t0
        return out

    with ThreadPoolExecutor(args.concurrency) as pool:
        outs = list(pool.map(call, prompts))
    decisions = np.array(LIVE[-1].decisions_s) * 1e6
    serve.delete("bench")
    ttft = np.array([o["ttft_s"] for o in outs]) * 1e3
    return {"router": name, "decisions": len(decisions),
            "us_mean": decisions.mean(), "us_p50": np.median(decisions),
            "us_p99": np.quantile(decisions, 0.99),
            "hit_rate": sum(o["cached_tokens"] for o in outs) / sum(o["prompt_tokens"]
                                                                    for o in outs),
            "ttft_mean": ttft.mean(), "ttft_p99": np.quantile(ttft, 0.99),
            "client_mean": 1e3 * np.mean([o["client_s"] for o in outs])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--groups", type=int, default=6)
    ap.add_argument("--concurrency", type=int, default=12)
    ap.add_argument("--speed", type=float, default=4.0)
    ap.add_argument("--capacity", type=int, default=2500)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    ray.init(include_dashboard=False, log_to_driver=False)
    serve.start(proxy_location="Disabled")  # handles only
    prompts = workload(args.requests, args.groups, args.seed)
    rows = [run_one(name, args, prompts) for name in ROUTERS]
    print(f"\n{args.requests} requests, {args.groups} prefix families, concurrency "
          f"{args.concurrency}, 3 replicas, capacity {args.capacity}, speed {args.speed}")
    print("| router | decisions | decision mean us | p50 us | p99 us | hit rate | "
          "TTFT mean ms | TTFT p99 ms | client mean ms |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['router']} | {r['decisions']} | {r['us_mean']:.0f} | {r['us_p50']:.0f} | "
              f"{r['us_p99']:.0f} | {r['hit_rate']:.3f} | {r['ttft_mean']:.1f} | "
              f"{r['ttft_p99']:.1f} | {r['client_mean']:.1f} |")
    serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()
