"""Issue 13's one-cache targets for ``learned`` on streams and capacities it was not
designed on: a check of how its design generalises.

    PYTHONPATH=src python benchmarks/eviction_sweep.py \
        [--trace ../shared/traces/mooncake_synthetic_trace.jsonl] [--seeds 1,2,3] [--long]

``learned`` was designed on GSP at 200,000 tokens (16-token pages, prefix ratio 0.5),
the Mooncake trace in blocks at 1%, 5%, 10% and the adversarial cycle
(docs/eviction-results.md). This sweep replays other capacities, GSP shapes, the LooGLE
and ShareGPT streams, 4,000-request traces of the invented conversation and agentic
shapes (``kvroute.workloads.mooncake_synth.SHAPES``, drawn by the seed), and the trace
at other capacities and in tokens (skipped without ``--trace``), every policy beside the
offline optimum, and prints per cell (means over the seeds): learned / max(lru, rlt),
learned / the best of lfu, slru, sae, learned / block_lru (vLLM's block LRU), the
optimum / max(lru, rlt), learned's share of the optimum, the verdict of issue 13's rules
(``eviction_results.status``) and learned's replay time over rlt's, then one line to
compare variants by: the geometric mean of learned / max(lru, rlt) over the GSP cells
and over the others, the lowest, and how many are under the 0.98x floor. About 40
seconds for three seeds on one core. ``--long`` adds 24,000-request traces of the fitted
Mooncake statistics and of the conversation shape (real traces run that long; the
repository's has 3,993 requests): about 2 minutes more.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from eviction_results import BASELINES, status
from kvroute.cache.replay_grid import replay_grid
from kvroute.workloads.cache_streams import (
    CacheStream,
    parse_capacities,
    trace_stream,
    workload_stream,
)
from kvroute.workloads.mooncake_synth import SHAPES, synth_records

POLICIES = ["lru", "block_lru", "lfu", "slru", "sae", "rlt", "learned", "optimal"]
TRACE = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "traces",
                     "mooncake_synthetic_trace.jsonl")

Stream = Callable[[int], CacheStream]  # seed -> stream


def cells(trace: str | None, long: bool = False) -> list[tuple[str, Stream, str, int]]:
    """(label, stream of a seed, capacities, page size)."""
    def gsp(**opts: Any) -> Stream:
        return lambda seed: workload_stream("gsp", seed, **opts)

    def named(name: str) -> Stream:
        return lambda seed: workload_stream(name, seed)

    def shape(name: str, n: int = 4000) -> Stream:  # a synthetic trace in blocks, by seed
        def make(seed: int) -> CacheStream:
            prompts = [r.hash_ids for r in synth_records(n, SHAPES[name], seed)]
            return CacheStream(name, "block", prompts,
                               len(np.unique(np.concatenate(prompts))))
        return make

    out: list[tuple[str, Stream, str, int]] = [
        ("GSP, 16-token pages", gsp(), "50000,100000,400000", 16),
        ("GSP prefix ratio 0.2", gsp(prefix_ratio=0.2), "200000", 16),
        ("GSP prefix ratio 0.8", gsp(prefix_ratio=0.8), "200000", 16),
        ("GSP 512 groups x 8", gsp(groups=512, prompts_per_group=8), "200000", 16),
        ("LooGLE", named("loogle"), "1%,2%,5%,10%,20%", 1),
        ("ShareGPT", named("sharegpt"), "1%,5%,20%", 1),
        ("conversation shape, blocks", shape("conversation"), "1%,5%,10%", 1),
        ("agentic shape, blocks", shape("agentic"), "1%,5%,10%", 1),
    ]
    if trace:
        blocks = trace_stream(trace, "block")
        tokens = trace_stream(trace, "token")
        out += [("Mooncake blocks", lambda seed: blocks, "0.5%,2%,20%,40%", 1),
                ("Mooncake tokens", lambda seed: tokens, "1%,5%,10%", 16)]
    if long:
        out += [("Mooncake model, 24,000 requests", shape("mooncake", 24_000), "1%,5%,10%", 1),
                ("conversation shape, 24,000", shape("conversation", 24_000), "1%,5%,10%", 1)]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trace", default=TRACE if os.path.exists(TRACE) else None,
                    help="the Mooncake trace (default: ../shared's, if present)")
    ap.add_argument("--seeds", default="1,2,3", help="comma-separated seeds")
    ap.add_argument("--long", action="store_true", help="add 24,000-request traces")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    console = Console(width=124)
    table = Table(title=f"learned on streams it was not designed on, seeds {args.seeds}")
    for col in ("stream", "capacity", "vs lru/rlt", "vs engines", "vs vLLM", "opt vs lru/rlt",
                "of opt", "time vs rlt", "issue 13"):
        table.add_column(col, justify="left" if col in ("stream", "issue 13") else "right")
    start = time.perf_counter()
    ratios: dict[tuple[str, str], float] = {}  # (stream, capacity) -> learned / max(lru, rlt)
    for label, make, capacities, page in cells(args.trace, args.long):
        rates: dict[tuple[str, str], list[float]] = {}
        seconds: dict[tuple[str, str], float] = {}
        for seed in seeds:
            stream = make(seed)
            caps = parse_capacities(capacities, stream.unique_units)
            grid = replay_grid(stream.prompts, caps, POLICIES[:-1], seed=seed,
                               page_size=page)
            for text, res in zip(capacities.split(","), grid, strict=True):
                got = {r["policy"]: r["hit_rate"] for r in res["policies"]}
                for r in res["policies"]:
                    seconds[(text, r["policy"])] = seconds.get((text, r["policy"]), 0.0) \
                        + r["seconds"]
                got["optimal"] = res["ceilings"]["optimal"]
                for name, rate in got.items():
                    rates.setdefault((text, name), []).append(rate)
        for text in capacities.split(","):
            r = {name: statistics.fmean(rates[(text, name)]) for name in POLICIES}
            verdict, _ = status({"stream": label, "sets": {"s": {"rates": r}}}, "s")
            base = max(r["lru"], r["rlt"])
            if base:
                ratios[(label, text)] = r["learned"] / base
            engine = max(r[b] for b in BASELINES)
            table.add_row(label, text, f"{r['learned'] / base:.3f}",
                          f"{r['learned'] / engine:.3f}" if engine else "-",
                          f"{r['learned'] / r['block_lru']:.3f}" if r["block_lru"] else "-",
                          f"{r['optimal'] / base:.2f}" if base else "-",
                          f"{r['learned'] / r['optimal']:.0%}",
                          f"{seconds[(text, 'learned')] / seconds[(text, 'rlt')]:.1f}x",
                          verdict.replace("*", ""))
        console.print(f"{label}: done after {time.perf_counter() - start:.0f} s")
    console.print(table)
    console.print("vs lru/rlt: learned / max(lru, rlt); vs engines: learned / the best of "
                  "lfu, slru, sae; vs vLLM: learned / block_lru; opt: the offline optimum; "
                  "issue 13: its rules for one cell (benchmarks/eviction_results.py)")
    gsp = [v for (label, _), v in ratios.items() if label.startswith("GSP")]
    other = {k: v for k, v in ratios.items() if not k[0].startswith("GSP")}
    low = min(other, key=other.__getitem__)
    console.print(f"learned / max(lru, rlt), geometric means: GSP {geomean(gsp):.3f} "
                  f"({len(gsp)} cells), the others {geomean(list(other.values())):.3f} "
                  f"({len(other)} cells); lowest {other[low]:.3f} ({low[0]} at {low[1]}); "
                  f"{sum(v < 0.98 for v in other.values())} under 0.98", markup=False)


def geomean(values: list[float]) -> float:
    return math.exp(statistics.fmean(map(math.log, values)))


if __name__ == "__main__":
    main()
