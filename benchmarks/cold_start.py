"""Routing from cold caches: mean TTFT and E2E of a stream's first N requests, per policy.

The README's live run (``kvroute up --bench``) sends the first 256 requests of GSP at 12
requests/s to a cold cluster; its emulated workers are the simulator's workers in real
time, so this script gives the same numbers in seconds, and how they change as the run
goes on (docs/routing-results.md, "The README's live run, router by router"):

    PYTHONPATH=src python benchmarks/cold_start.py [--requests 256,512,1024,2048,4096]
        [--policies learned,cache_aware_v2,loadaware,prefix_hash] [--rate 12] [--seed 1]

Each cell is one simulator run (4 workers, the default profile, eviction ``rlt``) of the
first N requests of the seeded GSP stream in random order, nothing else changed; about
a minute for the defaults.
"""

from __future__ import annotations

import argparse
import itertools

from rich.console import Console
from rich.table import Table

from kvroute.sim.cluster import SimConfig, simulate
from kvroute.workloads.catalog import build_workload
from kvroute.workloads.request import OpenLoop


def first_requests(n: int, rate: float, seed: int) -> OpenLoop:
    """The first ``n`` requests of GSP (random order) at ``rate`` requests/s."""
    stream = build_workload("gsp", seed, rate=rate)
    return OpenLoop.of("gsp", list(itertools.islice(iter(stream), n)))


def run(n: int, policy: str, rate: float, seed: int) -> tuple[float, float]:
    """Mean TTFT and mean E2E (s) of ``policy`` on the first ``n`` requests."""
    summary = simulate(first_requests(n, rate, seed),
                       SimConfig(eviction="rlt", routing=policy, seed=seed)).summary()
    return summary["ttft_s"]["mean"], summary["e2e_s"]["mean"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", default="256,512,1024,2048,4096")
    ap.add_argument("--policies", default="learned,cache_aware_v2,loadaware,prefix_hash")
    ap.add_argument("--rate", type=float, default=12.0)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    sizes = [int(x) for x in args.requests.split(",")]
    policies = args.policies.split(",")
    table = Table(title=f"mean TTFT / mean E2E (s), GSP at {args.rate:g} requests/s from "
                        "cold caches, first N requests")
    table.add_column("N", justify="right")
    for p in policies:
        table.add_column(p, justify="right")
    for n in sizes:
        table.add_row(f"{n:,}", *(f"{t:.2f} / {e:.2f}"
                                  for t, e in (run(n, p, args.rate, args.seed)
                                               for p in policies)))
    Console().print(table)


if __name__ == "__main__":
    main()
