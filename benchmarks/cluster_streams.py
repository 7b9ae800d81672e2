"""Eviction policies on the cache streams of a simulated cluster's workers, routing fixed.

In the cluster an eviction policy's effect reaches the latencies through the router, and
one run's mean TTFT moves by several percent with any change of decisions (moving a
trace window's start by a few requests moved `learned` / `rlt` from 0.90x to 1.12x:
docs/eviction-results.md). This records, in one simulator run, each worker's cache
operations in order, as the worker makes them:

* admission: the prompt's cached prefix is matched and locked, and the cache is cut to
  the pool less what the running requests reserve (their uncached prompt and output);
  an admission refused for want of room still makes its match;
* the prompt stored when its prefill ends (locked while the request decodes);
* prompt and output stored when it finishes (unlocked), and the cache cut again,

with the times and the reservations, and replays them through one cache per worker for
every eviction policy asked for (``--policies``), seeded as the simulator seeds that
worker's. Replaying the policy that ran reproduces the run's hit at every admission (a
red line says so if it does not). ``optimal`` is each worker's offline optimum of its
own stream. The routing, the timing and the reservations stay as recorded (a policy that
hits more would have shortened the prefills that followed), so what it compares is the
hit rate on the same streams: seconds per policy, with no run-to-run noise.

    PYTHONPATH=src python benchmarks/cluster_streams.py --trace T.jsonl [--trace T2.jsonl]
        [--loads 0.8,0.95] [--routing learned] [--recorded-with rlt]
        [--policies rlt,learned,block_lru,optimal] [--workers 4] [--limit N]

A variant of a policy: run it again with ``PYTHONPATH`` pointing at the variant's
``src`` (the recording uses the routing and ``--recorded-with`` eviction, so it is the
same as long as the variant changes neither). Prints each stream's hit rates and each
policy's over the first policy's, and their geometric means. Numbers: docs/cache.md,
"The cluster's own cache streams, routing fixed".
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from kvroute.cache import RadixCache, make_policy
from kvroute.cache.ceilings import COMPACT_RATIO
from kvroute.cache.eviction import policy_class
from kvroute.cache.runs import Runs
from kvroute.sim import worker as sim_worker
from kvroute.sim.cluster import SimConfig, simulate, worker_seed
from kvroute.sim.load import build_at_load
from kvroute.workloads.request import output_ids

console = Console()

ADMIT, REFUSED, PROMPT, FINISH = 0, 1, 2, 3


def compact(tokens: np.ndarray) -> Runs | np.ndarray:
    return Runs.compact(tokens, COMPACT_RATIO) or tokens


def expand(tokens: Runs | np.ndarray) -> np.ndarray:
    return tokens.array() if isinstance(tokens, Runs) else tokens


class Streams:
    """Each worker's cache operations in order, ``(kind, rid, reserved, now)``:
    ``reserved`` is what its running requests hold of the pool when it cuts the cache
    after the operation. Per request: its prompt and output ids (as runs where they are
    compact), the cached tokens its admission found in the run, and the pool it reserved
    (``need``: what an "allocation" policy is asked to free)."""

    def __init__(self, pool: int, seed: int) -> None:
        self.pool, self.seed = pool, seed
        self.ops: dict[int, list[tuple[int, int, int, float]]] = {}
        self.prompts: dict[int, Runs | np.ndarray] = {}
        self.outputs: dict[int, Runs | np.ndarray] = {}
        self.cached: dict[int, int] = {}
        self.need: dict[int, int] = {}

    def log(self, worker: Any, kind: int, job: Any, reserved: int, now: float) -> None:
        rid = job.req.rid
        if rid not in self.prompts:
            self.prompts[rid] = compact(job.req.tokens)
            self.outputs[rid] = compact(output_ids(job.req))
        if kind == ADMIT:
            self.cached[rid], self.need[rid] = job.cached, job.need
        self.ops.setdefault(worker.index, []).append((kind, rid, reserved, now))


def record(trace: str, load: float, cfg: SimConfig, limit: int | None) -> Streams:
    """Run the simulator once, logging every worker's cache operations (the worker's
    three methods that make them are wrapped for the run, then restored)."""
    cls = sim_worker.SimWorker
    admit, store, finish = cls._admit, cls._store_prompt, cls._finish
    wl, _ = build_at_load("mooncake", cfg.seed, load, cfg.step_model(), cfg.speed_sum,
                          cfg.chunk_size, trace=trace, limit=limit)
    streams = Streams(pool=cfg.capacity or cfg.step_model().kv_pool_tokens, seed=cfg.seed)

    def logged_admit(self: Any, job: Any, now: float) -> bool:
        ok: bool = admit(self, job, now)
        streams.log(self, ADMIT if ok else REFUSED, job, self.reserved, now)
        return ok

    def logged_store(self: Any, job: Any, now: float) -> None:
        streams.log(self, PROMPT, job, 0, now)
        store(self, job, now)

    def logged_finish(self: Any, job: Any, now: float) -> None:
        streams.log(self, FINISH, job, self.reserved - job.need, now)
        finish(self, job, now)

    cls._admit, cls._store_prompt, cls._finish = (  # type: ignore[method-assign]
        logged_admit, logged_store, logged_finish)
    try:
        simulate(wl, cfg)
    finally:
        cls._admit, cls._store_prompt, cls._finish = (  # type: ignore[method-assign]
            admit, store, finish)
    return streams


def replay_worker(worker: int, streams: Streams, policy: str) -> Iterator[tuple[int, int, int]]:
    """Yield (rid, hit, prompt length) of each admission of one worker's stream, its
    cache seeded as the simulator seeds that worker's. ``optimal`` is the offline
    optimum of this stream (its future: the prompts admitted, in order); its clock is
    the admission's index, and an operation between two admissions is half a step after
    the first."""
    pool = streams.pool
    ops = streams.ops[worker]
    offline = policy_class(policy).needs_future
    if offline:
        future = [expand(streams.prompts[rid]) for kind, rid, _, _ in ops if kind == ADMIT]
        chosen = make_policy(policy, requests=future)
    else:
        chosen = make_policy(policy, seed=worker_seed(streams.seed, worker))
    cache = RadixCache(pool, chosen)
    handles = {}
    admitted = 0
    for kind, rid, reserved, at in ops:
        now = (admitted if kind == ADMIT else max(admitted - 0.5, 0)) if offline else at
        prompt = expand(streams.prompts[rid])
        if kind in (ADMIT, REFUSED):
            hit = cache.match(prompt, now)
            cache.lock(hit.handle)
            if kind == REFUSED:  # no room: it waits, its match made
                cache.unlock(hit.handle)
                continue
            admitted += 1
            handles[rid] = hit.handle
            yield rid, min(hit.hit, len(prompt) - 1), len(prompt)
        elif kind == PROMPT:
            cache.insert(prompt, now)
            handle = cache.match(prompt, now).handle
            cache.lock(handle)
            cache.unlock(handles[rid])
            handles[rid] = handle
            continue  # no cut here: the reservations only shrink
        else:
            cache.insert(np.concatenate([prompt, expand(streams.outputs[rid])]), now)
            cache.unlock(handles.pop(rid))
        over = cache.total + reserved - pool
        if over > 0:  # as the worker asks: an admission asks an "allocation" policy for all
            allocation = kind == ADMIT and cache.eviction_request == "allocation"
            cache.evict(streams.need[rid] if allocation else over)


def hit_rate(streams: Streams, policy: str) -> tuple[float, bool]:
    """The policy's hit rate over every worker's stream; and whether each admission hit
    exactly what it hit in the recorded run."""
    hits = total = 0
    same = True
    for worker in streams.ops:
        for rid, hit, length in replay_worker(worker, streams, policy):
            hits += hit
            total += length
            same = same and hit == streams.cached[rid]
    return (hits / total if total else 0.0), same


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trace", action="append", required=True,
                    help="a Mooncake-format trace (repeat for more)")
    ap.add_argument("--loads", default="0.8,0.95")
    ap.add_argument("--routing", default="learned")
    ap.add_argument("--recorded-with", default="rlt", help="the eviction of the recorded run")
    ap.add_argument("--policies", default="rlt,learned,block_lru,optimal")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--limit", type=int, help="the first N requests of each trace")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    policies = args.policies.split(",")
    table = Table("trace", "load", *policies, *(f"{p} / {policies[0]}" for p in policies[1:]))
    ratios: dict[str, list[float]] = {p: [] for p in policies[1:]}
    for trace in args.trace:
        for load in map(float, args.loads.split(",")):
            cfg = SimConfig(workers=args.workers, eviction=args.recorded_with,
                            routing=args.routing, seed=args.seed)
            streams = record(trace, load, cfg, args.limit)
            rates, same = {}, {}
            for p in policies:
                rates[p], same[p] = hit_rate(streams, p)
            if args.recorded_with in same and not same[args.recorded_with]:
                console.print(f"[red]the replay of {args.recorded_with} does not reproduce "
                              "the recorded run's hits[/]")
            base = rates[policies[0]]
            for p in policies[1:]:
                ratios[p].append(rates[p] / base)
            table.add_row(trace.rsplit("/", 1)[-1], f"{load:g}",
                          *(f"{rates[p]:.4f}" for p in policies),
                          *(f"{rates[p] / base:.3f}x" for p in policies[1:]))
            console.print(f"{trace} @ {load:g}: "
                          + ", ".join(f"{p} {rates[p]:.4f}" for p in policies))
    console.print(table)
    for p, rs in ratios.items():
        geo = math.exp(sum(map(math.log, rs)) / len(rs))
        console.print(f"{p} / {policies[0]}: geometric mean {geo:.4f}x, lowest {min(rs):.4f}x "
                      f"over {len(rs)} streams")


if __name__ == "__main__":
    main()
