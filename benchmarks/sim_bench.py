"""Simulator speed: the paper's GSP setup per eviction policy, and the Mooncake trace.

Targets (issue 3): GSP (4 workers, L40 profile, 200,000-token pools, 4,096 requests) under
5 s per eviction policy; the Mooncake synthetic trace (3,993 requests, 4 workers) under
30 s. Prints wall time, simulated requests per wall-second and simulated time per
wall-second. Ceilings are not computed (they are not part of a simulation).

    python benchmarks/sim_bench.py [--trace PATH] [--policies lru,rlt] [--repeats 1]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from kvroute.sim.cluster import SimConfig, simulate
from kvroute.workloads.gsp import gsp_workload
from kvroute.workloads.mooncake import load_mooncake
from kvroute.workloads.request import Workload


def bench(name: str, workload: Workload, cfg: SimConfig, target: float, repeats: int) -> None:
    best = None
    for _ in range(repeats):
        start = time.perf_counter()
        res = simulate(workload, cfg)
        wall = time.perf_counter() - start
        if best is None or wall < best[0]:
            best = (wall, res)
    assert best is not None
    wall, res = best
    ok = "met" if wall < target else "NOT met"
    print(f"{name:<26} {cfg.eviction:<13} {wall:7.2f} s  {len(res.records) / wall:9,.0f} req/s  "
          f"{res.sim_time / wall:9,.1f} sim-s/s  hit {res.records.hit_rate():.4f}  "
          f"target < {target:.0f} s {ok}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policies", default="lru,rlt,rlt_faithful")
    ap.add_argument("--trace", type=Path, help="a Mooncake-format trace (JSONL) to time as well")
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    policies = args.policies.split(",")
    gsp = gsp_workload()
    print(f"{'workload':<26} {'eviction':<13} {'wall':>9}  {'throughput':>15}  {'speed':>16}")
    for ev in policies:
        bench("gsp 4096 (L40, 4x200K)", gsp, SimConfig(eviction=ev), 5.0, args.repeats)
    if args.trace is not None:
        if not args.trace.exists():
            raise SystemExit(f"sim_bench: no trace at {args.trace}")
        trace = load_mooncake(args.trace)
        for ev in policies:
            bench("mooncake 3993 (L40, 4x200K)", trace, SimConfig(eviction=ev), 30.0,
                  args.repeats)
    else:
        print("(Mooncake part skipped: pass --trace PATH to a Mooncake-format trace)")


if __name__ == "__main__":
    main()
