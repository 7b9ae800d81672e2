"""Simulator speed: the paper's GSP setup per eviction policy, and the Mooncake trace;
with --scale, peak memory and wall time against trace length.

Targets (issue 3): GSP (4 workers, L40 profile, 200,000-token pools, 4,096 requests) under
5 s per eviction policy; the Mooncake synthetic trace (3,993 requests, 4 workers) under
30 s. Prints wall time, simulated requests per wall-second and simulated time per
wall-second. Ceilings are not computed (they are not part of a simulation).

    python benchmarks/sim_bench.py [--trace PATH] [--policies lru,rlt] [--repeats 1]

Scale (issue 16): ``--scale`` writes synthetic Mooncake-format traces of each size
(benchmarks/make_trace.py's generator, seed 1) and runs ``kvroute sim --trace FILE``
(defaults: rlt + learned, 4 workers, L40) on each, without and with the
ceilings, each run in a child process: peak RSS (the child's ru_maxrss) and wall time.
The baseline, in the same run: the ceilings computed the old way, on int64 token arrays,
in a child of its own (sizes up to --tokens-max). Target: 100,000 requests with ceilings
under 4 GB and under 10 minutes (``--big`` adds the 50k and 100k points; slow).

    python benchmarks/sim_bench.py --scale [--sizes 4000,12000,25000] [--big]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from kvroute.cache import hit_rate_ceilings
from kvroute.sim.cluster import SimConfig, simulate
from kvroute.sim.step_profiles import DEFAULT_PROFILE, load_profile
from kvroute.workloads.gsp import gsp_workload
from kvroute.workloads.mooncake import load_mooncake, write_mooncake
from kvroute.workloads.mooncake_synth import MOONCAKE_SYNTHETIC, synth_records
from kvroute.workloads.request import Workload, output_ids

GB = 1 << 30
TARGET_N, TARGET_BYTES, TARGET_S = 100_000, 4 * GB, 600.0


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


def child(cmd: list[str]) -> tuple[float, int, str]:
    """Run ``cmd``; its wall seconds, peak RSS (bytes) and stdout."""
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - start
        out.seek(0)
        text = out.read()
    if proc.returncode:
        raise SystemExit(f"sim_bench: {' '.join(cmd)} failed:\n{text[-2000:]}")
    return wall, usage.ru_maxrss * 1024, text


def token_ceilings(path: str) -> None:
    """The baseline (a child): the ceilings on int64 token arrays, every prompt held."""
    reqs = list(load_mooncake(path))
    ceil = hit_rate_ceilings([r.tokens for r in reqs], load_profile(DEFAULT_PROFILE)
                             .kv_pool_tokens, workers=4,
                             inserts=[np.concatenate([r.tokens, output_ids(r)]) for r in reqs])
    print(f"ceilings: infinite cache {ceil.infinite:.4f}; offline optimum pooled over "
          f"{ceil.workers} x {ceil.capacity:,} tokens {ceil.optimal:.4f}.")


def _ceil(text: str) -> str:
    m = re.search(r"infinite cache (\d\.\d+);.*? tokens (\d\.\d+)", " ".join(text.split()))
    return f"{m.group(1)}/{m.group(2)}" if m else "-"


def scale(sizes: list[int], tokens_max: int, seed: int) -> None:
    sim = [sys.executable, "-m", "kvroute", "sim", "--columns", "hit,wall", "--trace"]
    print(f"{'requests':>9} {'ceilings':>9} {'wall s':>8} {'peak RSS':>9} "
          f"{'hit':>7} {'ceilings inf/opt':>17}  note")
    target = None
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            path = str(Path(tmp) / f"mc{n}.jsonl")
            write_mooncake(path, synth_records(n, MOONCAKE_SYNTHETIC, seed))
            runs = {}
            for ceilings in (False, True):
                wall, rss, text = child(sim + [path] + ([] if ceilings else ["--no-ceilings"]))
                hit = re.search(r"\| ([0-9.]+) \|", text)
                runs[ceilings] = (wall, rss, _ceil(text))
                note = ""
                if ceilings:
                    note = f"ceilings add {(rss - runs[False][1]) / GB:+.2f} GB"
                print(f"{n:>9,} {'on' if ceilings else 'off':>9} {wall:>8.1f} "
                      f"{rss / GB:>7.2f} GB {hit.group(1) if hit else '-':>7} "
                      f"{_ceil(text) if ceilings else '':>17}  {note}", flush=True)
            if n <= tokens_max:
                wall, rss, text = child([sys.executable, __file__, "--token-ceilings", path])
                same = "same" if _ceil(text) == runs[True][2] else "DIFFERENT"
                print(f"{n:>9,} {'tokens':>9} {wall:>8.1f} {rss / GB:>7.2f} GB {'':>7} "
                      f"{_ceil(text):>17}  baseline: ceilings alone on token arrays "
                      f"({same}); sim+ceilings RSS = {runs[True][1] / rss:.2f}x this", flush=True)
            if n == TARGET_N:
                target = runs[True]
    if target is None:
        print(f"target ({TARGET_N:,} requests with ceilings < 4 GB and < 10 min): not run "
              "(pass --big)")
    else:
        ok = target[1] < TARGET_BYTES and target[0] < TARGET_S
        print(f"target ({TARGET_N:,} requests with ceilings < 4 GB and < 10 min): "
              f"{target[1] / GB:.2f} GB, {target[0]:.0f} s: {'met' if ok else 'NOT met'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policies", default="lru,rlt,rlt_faithful")
    ap.add_argument("--trace", type=Path, help="a Mooncake-format trace (JSONL) to time as well")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--scale", action="store_true", help="memory and time against trace length")
    ap.add_argument("--sizes", default="4000,12000,25000", help="--scale: requests per trace")
    ap.add_argument("--big", action="store_true", help="--scale: add 50,000 and 100,000")
    ap.add_argument("--tokens-max", type=int, default=12000,
                    help="--scale: largest size for the token-array baseline")
    ap.add_argument("--seed", type=int, default=1, help="--scale: the traces' seed")
    ap.add_argument("--token-ceilings", metavar="PATH", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.token_ceilings:
        token_ceilings(args.token_ceilings)
        return
    if args.scale:
        sizes = [int(x) for x in args.sizes.split(",")] + ([50_000, TARGET_N] if args.big else [])
        scale(sizes, args.tokens_max, args.seed)
        return
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
