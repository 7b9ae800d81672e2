"""A design loop for ``learned`` eviction on session traffic, the one place measured
where it was worse than ``rlt`` (docs/cache.md, "`learned` on session traffic in the
cluster"): one cache and the cluster, on the invented agentic or conversation shape.

    PYTHONPATH=src python benchmarks/session_loop.py [--shape agentic] [--seeds 1,2,3] \
        [--eviction-arg KEY=VALUE ...] [--no-cluster]

For each trace seed N it draws the 2,000-request trace that ``python
benchmarks/make_trace.py -n 2000 --shape S --seed N`` writes, then runs

* one cache in tokens (each 512-token block expanded) at 200,000, 400,000 and 800,000
  tokens: lru, rlt and learned; printed: learned / max(lru, rlt);
* the cluster (``kvroute compare``: 4 simulated workers, the ``learned`` router, offered
  loads 0.8 and 0.95, simulator seed 1): rlt and learned eviction; printed: their hit
  rates and learned / rlt mean TTFT;

and the geometric means over the traces. ``--eviction-arg`` goes to ``learned`` in both
(for a variant behind a parameter). About 20 s a trace on one core, most of it the
cluster. Agentic, trace seeds 1-3 / 4-6 (2026-12-06): one cache 0.993x / 0.996x /
0.998x and 0.996x / 0.994x / 0.998x; cluster 0.984x / 1.029x and 1.009x / 1.016x at 0.8 /
0.95 (``--eviction-arg shadow=0``, without the recency check: 0.990x / 0.990x / 0.994x;
1.040x / 1.087x and 1.085x / 1.060x). Before a change is
kept, the rest of issue 13's cells must hold: ``benchmarks/eviction_results.py
--no-cluster`` (15 s) and ``benchmarks/eviction_sweep.py`` (40 s a seed set).
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile

from eviction_results import SESSION_REQUESTS, _compare
from kvroute.cache.replay_grid import replay_grid
from kvroute.errors import ConfigError
from kvroute.workloads.cache_streams import trace_stream
from kvroute.workloads.mooncake import write_mooncake
from kvroute.workloads.mooncake_synth import SHAPES, synth_records

CAPACITIES = (200_000, 400_000, 800_000)  # tokens: the cluster's pool per worker, x2, x4
LOADS = ("0.8", "0.95")


def geo(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def one_cache(path: str, params: dict[str, str]) -> list[float]:
    """learned / max(lru, rlt) at each of ``CAPACITIES``."""
    grid = replay_grid(trace_stream(path, "token").prompts, CAPACITIES,
                       ["lru", "rlt", "learned"], params={"learned": params})
    out = []
    for res in grid:
        rate = {r["policy"]: r["hit_rate"] for r in res["policies"]}
        out.append(rate["learned"] / max(rate["lru"], rate["rlt"]))
    return out


def cluster(path: str, flags: list[str]) -> dict[str, tuple[float, float, float]]:
    """Per load: rlt's hit rate, learned's, and learned / rlt mean TTFT."""
    rows = _compare(["compare", "--workloads", "mooncake", "--trace", path,
                     "--evictions", "rlt,learned", "--routings", "learned",
                     "--loads", ",".join(LOADS), "--seeds", "1", *flags])
    by = {(str(r["load"]), r["eviction"]): r for r in rows}
    return {load: (by[load, "rlt"]["hit_rate"], by[load, "learned"]["hit_rate"],
                   by[load, "learned"]["ttft_mean"] / by[load, "rlt"]["ttft_mean"])
            for load in LOADS}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", choices=sorted(set(SHAPES) - {"mooncake"}), default="agentic")
    ap.add_argument("--seeds", default="1,2,3", help="trace seeds, comma-separated")
    ap.add_argument("--eviction-arg", action="append", default=[], metavar="KEY=VALUE",
                    help="a parameter of learned eviction (repeat for more)")
    ap.add_argument("--no-cluster", action="store_true", help="one cache only")
    args = ap.parse_args()
    if any("=" not in kv for kv in args.eviction_arg):
        ap.error("--eviction-arg takes KEY=VALUE")
    params = dict(kv.split("=", 1) for kv in args.eviction_arg)
    flags = [f for kv in args.eviction_arg for f in ("--eviction-arg", f"learned.{kv}")]
    caches: list[list[float]] = []
    ttft: dict[str, list[float]] = {load: [] for load in LOADS}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in (int(s) for s in args.seeds.split(",")):
            path = os.path.join(tmp, f"{args.shape}_{seed}.jsonl")
            write_mooncake(path, synth_records(SESSION_REQUESTS, SHAPES[args.shape], seed))
            caches.append(one_cache(path, params))
            line = "  ".join(f"{c:,}: {r:.4f}x" for c, r in zip(CAPACITIES, caches[-1],
                                                                 strict=True))
            print(f"trace seed {seed}, one cache, learned / max(lru, rlt): {line}", flush=True)
            if args.no_cluster:
                continue
            for load, (rlt, learned, ratio) in cluster(path, flags).items():
                ttft[load].append(ratio)
                print(f"trace seed {seed}, cluster at {load}: hit rate rlt {rlt:.4f}, "
                      f"learned {learned:.4f}; learned / rlt mean TTFT {ratio:.3f}x",
                      flush=True)
    line = "  ".join(f"{c:,}: {geo(list(r)):.4f}x"
                     for c, r in zip(CAPACITIES, zip(*caches, strict=True), strict=True))
    print(f"geometric means over trace seeds {args.seeds}: one cache {line}")
    if not args.no_cluster:
        print("  cluster, learned / rlt mean TTFT: " +
              "  ".join(f"{load}: {geo(r):.3f}x" for load, r in ttft.items()))


if __name__ == "__main__":
    try:
        main()
    except ConfigError as exc:
        raise SystemExit(f"session_loop: {exc}") from None
