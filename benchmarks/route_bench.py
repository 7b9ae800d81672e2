"""Time per routing decision, for each policy, with 4, 16 and 64 workers on 8K-token prompts.

Each decision is one ``Router.route`` call: the policy, the prefix-index lookup (for the
policies that use it), the in-flight accounting and recording the prompt in the index.
The index is warmed with 512 prompts first (GSP-like: groups sharing a 4K-token prefix),
and each timed request is completed right away so in-flight counts stay bounded.
Targets: ``lbgr`` under 50 us at 4 workers and under 200 us at 64 (issue 4); ``learned``
under 100 us at 16 workers and under 300 us at 64 (issue 12). Where both are measured it
also prints ``learned``'s time over ``cache_aware_v2``'s, which the machine's speed moves
much less than either (2026-12-05, a quiet machine: 90.7 / 42.9 us = 2.11x at 16 workers).

With ``--ttft`` every request gets its first token 0.5 ms after dispatch, so the policies
that learn from TTFTs (``llmd_predicted``, ``smetric``, ``learned``) are timed past their
warm-up; without it (the default, as in docs/routing.md's table) they never see one, as
for clients that do not stream: ``learned`` then learns from each completion's E2E
(``LatencyModels.completions_only``), the others stay on their priors. No cached tokens are
reported either way, unless ``--pool``: then every worker reports a KV pool of 200,000
tokens, half in use, and every completion 4,096 cached tokens (as the simulator's engines
do), so ``learned`` checks each worker for a wait for room in its pool. With
``--adapters N`` each request is for one of N LoRA adapters in turn, every worker reports
a cap of ``--max-loras`` (2) adapters at once, and each request completes only after as
many later decisions as there are workers (about one open per worker), so ``learned``
prices adapter slots some of which are taken.
With ``--busy`` every decision also asks ``Router.hold`` first (late binding) with every
worker busy: each request gets its first token after as many later decisions as there
are workers and completes after four times as many, so each worker has about one request
prefilling and three decoding, and ``learned``'s hold check reads them all (the bench
routes each request anyway). Each figure then covers the hold check, the decision and
the learning of a first token and a completion; no target verdict is printed.

    python benchmarks/route_bench.py [--requests 400] [--workers 4,16,64] [--ttft] [--pool]
        [--adapters N [--max-loras M]] [--busy] [--policies a,b,...] [--repeats 3]

The machine's noise moves single runs by 10% and more, and its slow spells (seconds to
minutes) by 30-70%: the whole table is measured ``--repeats`` times (3), one round after
another, and each cell shows its best round (as ``cache_bench.py`` and ``timeit`` do).
"""

from __future__ import annotations

import argparse
import gc
import time
from collections import deque

import numpy as np

from kvroute.routing import Decision, Router, RouteRequest, make_router_policy, routing_names


def prompts(n: int, rng: np.random.Generator, groups: int = 64) -> list[np.ndarray]:
    shared = [rng.integers(0, 128_256, 4096) for _ in range(groups)]
    return [np.concatenate([shared[i % groups], rng.integers(0, 128_256, 4096)])
            for i in range(n)]


def bench(policy: str, workers: int, warm: list[np.ndarray], timed: list[np.ndarray],
          ttft: bool = False, pool: bool = False, adapters: int = 0,
          max_loras: int = 2, busy: bool = False) -> float:
    gc.collect()  # the earlier cells' routers (their trees hold cycles) are not timed here
    router = Router(make_router_policy(policy, seed=1), workers)
    if pool or adapters:
        for w in range(workers):
            router.report_load(w, running=0, waiting=0, kv_usage=0.5 if pool else 0.0,
                               kv_capacity=200_000 if pool else 0,
                               max_loras=max_loras if adapters else 0)
    cached = 4096 if pool else None
    lag = 4 * workers if busy else workers if adapters else 0  # decisions before completion
    open_: deque[Decision] = deque()
    prefilling: deque[Decision] = deque()  # --busy: requests without a first token yet
    now, i = 0.0, 0

    def decide(p: np.ndarray) -> None:
        nonlocal now, i
        now += 0.01
        i += 1
        req = RouteRequest(p, max_tokens=64 if busy else 4,
                           adapter=f"lora{i % adapters}" if adapters else None)
        if busy:
            router.hold(req, now)
        d = router.route(req, now)
        if busy:
            prefilling.append(d)
            if len(prefilling) > workers:
                router.first_token(prefilling.popleft(), now)
        elif ttft:
            router.first_token(d, now + 0.0005)
        if not lag:
            router.complete(d, now + 0.001, cached_tokens=cached)
            return
        open_.append(d)
        if len(open_) > lag:
            router.complete(open_.popleft(), now + 0.001, cached_tokens=cached)

    for p in warm:
        decide(p)
    start = time.perf_counter()
    for p in timed:
        decide(p)
    return (time.perf_counter() - start) / len(timed) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--workers", default="4,16,64")
    ap.add_argument("--ttft", action="store_true", help="a first token for every request")
    ap.add_argument("--pool", action="store_true",
                    help="workers report a KV pool, completions cached tokens")
    ap.add_argument("--adapters", type=int, default=0,
                    help="requests for N LoRA adapters in turn, on capped workers")
    ap.add_argument("--max-loras", type=int, default=2,
                    help="with --adapters: each worker's cap on adapters at once (2)")
    ap.add_argument("--busy", action="store_true",
                    help="every worker busy: time Router.hold, the decision and the learning of "
                         "first tokens and completions (no target verdicts)")
    ap.add_argument("--policies", default="", help="comma-separated (default: all)")
    ap.add_argument("--repeats", type=int, default=3,
                    help="measure the table N times, show each cell's best (default 3)")
    args = ap.parse_args()
    if args.repeats < 1:
        ap.error(f"--repeats must be >= 1, got {args.repeats}")
    if args.adapters < 0 or args.max_loras < 1:
        ap.error("--adapters must be >= 0 and --max-loras >= 1")
    sizes = [int(w) for w in args.workers.split(",")]
    rng = np.random.default_rng(0)
    warm, timed = prompts(512, rng), prompts(args.requests, rng)
    names = routing_names(needs_probes=False)  # a policy that needs probes needs a simulator
    if args.policies:
        names = [n for n in names if n in args.policies.split(",")]
    runs: dict[tuple[str, int], list[float]] = {(n, w): [] for n in names for w in sizes}
    for r in range(args.repeats):
        if args.repeats > 1:
            print(f"round {r + 1} of {args.repeats}...", flush=True)
        for name in names:
            for w in sizes:
                runs[name, w].append(bench(name, w, warm, timed, args.ttft, args.pool,
                                           args.adapters, args.max_loras, args.busy))
    measured = {cell: min(us) for cell, us in runs.items()}
    rounds = f", best of {args.repeats} rounds" if args.repeats > 1 else ""
    what = "hold check and routing decision" if args.busy else "routing decision"
    print(f"us per {what} (8,192-token prompts, {args.requests} decisions{rounds})")
    print(f"{'policy':<16}" + "".join(f"{w:>10} w" for w in sizes))
    for name in names:
        print(f"{name:<16}" + "".join(f"{measured[name, w]:>12.1f}" for w in sizes))
    # the machine's speed moves every cell (1.7x between days): learned's cost relative to
    # a simple prefix policy measured in the same rounds does not
    for w in sizes:
        if ("learned", w) in measured and ("cache_aware_v2", w) in measured:
            print(f"learned / cache_aware_v2 at {w} workers: "
                  f"{measured['learned', w] / measured['cache_aware_v2', w]:.2f}x")
    if args.busy:  # the targets are per decision, as the default mode times it
        print("(--busy: each figure adds the hold check and the learning of first tokens "
              "and completions; the targets are read in the default mode)")
        return
    # the target lines quote the table's own figures
    for name, targets in (("lbgr", ((4, 50), (64, 200))), ("learned", ((16, 100), (64, 300)))):
        for w, target in targets:
            if (name, w) in measured:
                us = measured[name, w]
                print(f"{name} target at {w} workers: {us:.1f} us (< {target}: "
                      f"{'met' if us < target else 'NOT met'})")


if __name__ == "__main__":
    main()
