"""A routing policy as it is against as changed, off the design grid: the suites where a
change to ``learned`` that passes the preset (``router_design_loop.py``) has shown its
cost before (docs/routing-results.md, "Design and check seeds", "Chat with longer
replies", "Trace shapes nobody designed on").

    PYTHONPATH=src python benchmarks/router_ab.py --against /tmp/other/src
        [--suites chat,shapes,featured,windows] [--seeds 1,2,3] [--loads 0.5,0.8,0.95]
        [--routing learned] [--arg K=V ...] [--against-arg K=V ...] [--jobs 2]

``--src`` (default ``src``) is the policy as it is, ``--against`` another checkout's
``src`` as changed (``git worktree add /tmp/other COMMIT``; leave it out to compare
policy arguments only: ``--against-arg``). Every run is ``kvroute sim ... --routing R
--eviction rlt --no-ceilings`` for both, at each load; the suites:

* ``chat``: synthetic ShareGPT conversations in open loop with 200-token replies, one run
  per seed;
* ``shapes``: the conversation and agentic shapes of ``kvroute.workloads.mooncake_synth``,
  a 1,500-request trace per seed;
* ``featured``: the conversation and Mooncake shapes with the public conversation trace's
  features (a first block shared by every prompt, arrivals on a 3-second grid, outputs
  2.3 times longer), as ``trace_shapes.py --shared-block --grid-ms 3000 --output-scale
  2.3`` makes them: the closest here to the real traces a router is judged on;
* ``windows``: four 2,000-request windows of the repository's trace
  (``trace_windows.py``), where ``../shared`` has it (skipped otherwise).

Prints, per suite, changed over as it is for mean E2E, mean TTFT and p99 TTFT: the
geometric mean over its runs and the lowest and highest run (below 1: the change is
faster). Single runs of the trace shapes move by 5-15% with any change of decisions, so
read the suites' means, not a run. About 2 minutes for the defaults on 2 cores (57 runs
each).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

from kvroute.workloads.mooncake import write_mooncake
from kvroute.workloads.mooncake_synth import SHAPES, synth_records
from same_decisions import TRACE, kvroute
from trace_shapes import featured
from trace_windows import METRICS, add_versions, check_versions, starts

SUITES = ("chat", "shapes", "featured", "windows")
FEATURES = argparse.Namespace(shared_block=True, grid_ms=3000, output_scale=2.3)
SHAPE_REQUESTS = 1500


def write_shape(shape: str, seed: int, features: bool, where: str) -> str:
    """A synthetic trace of ``shape`` drawn with ``seed`` (with the public trace's
    features where asked); its path."""
    path = os.path.join(where, f"{shape}_{seed}{'_featured' if features else ''}.jsonl")
    records = synth_records(SHAPE_REQUESTS, SHAPES[shape], seed)
    if features:
        records = (featured(r, FEATURES, SHAPES[shape].block_size) for r in records)
    write_mooncake(path, records)
    return path


def cases(suite: str, seeds: list[int], loads: list[str],
          where: str) -> list[tuple[str, list[str]]]:
    """The (label, ``kvroute sim`` arguments) of one suite's runs."""
    if suite == "chat":
        return [(f"s{s} @{load}", ["sim", "--workload", "sharegpt", "--mode", "open",
                                   "--output-len", "200", "--load", load, "--seed", str(s)])
                for s in seeds for load in loads]
    if suite == "windows":
        return [(f"from {start} @{load}", ["sim", "--trace", TRACE, "--start", str(start),
                                           "--limit", "2000", "--load", load])
                for load in loads for start in starts(TRACE, 4, 2000)]
    shapes = ("conversation", "agentic") if suite == "shapes" else ("conversation", "mooncake")
    out = []
    for shape in shapes:
        for s in seeds:
            path = write_shape(shape, s, suite == "featured", where)
            out += [(f"{shape} {s} @{load}", ["sim", "--trace", path, "--load", load])
                    for load in loads]
    return out


def run(src: str, argv: list[str], routing: str, policy_args: list[str]) -> list[float]:
    flags = [f for a in policy_args for f in ("--policy-arg", a)]
    summary = kvroute(src, [*argv, "--routing", routing, "--eviction", "rlt",
                            "--no-ceilings", *flags])["runs"][0]["summary"]
    return [float(summary[key][stat]) for key, stat, _ in METRICS]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_versions(ap)
    ap.add_argument("--suites", default=",".join(SUITES))
    ap.add_argument("--seeds", default="1,2,3", help="design 1,2,3; check 4,5,6")
    ap.add_argument("--loads", default="0.5,0.8,0.95")
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    suites = args.suites.split(",")
    if unknown := [s for s in suites if s not in SUITES]:
        ap.error(f"unknown suite {unknown[0]!r}: choose from {', '.join(SUITES)}")
    check_versions(ap, args)
    if args.jobs < 1:
        ap.error("--jobs must be >= 1")
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        ap.error(f"--seeds must be comma-separated integers, got {args.seeds!r}")
    if "windows" in suites and not os.path.isfile(TRACE):
        print(f"windows: skipped ({TRACE} not found)", file=sys.stderr)
        suites.remove("windows")
    changed = args.against or args.src
    with tempfile.TemporaryDirectory() as where:
        todo = [(suite, label, argv) for suite in suites
                for label, argv in cases(suite, seeds, args.loads.split(","), where)]
        print(f"{len(todo)} runs x 2 versions of {args.routing}, {args.jobs} at a time...",
              flush=True)
        with ThreadPoolExecutor(args.jobs) as pool:
            base = [pool.submit(run, args.src, argv, args.routing, args.arg)
                    for _, _, argv in todo]
            new = [pool.submit(run, changed, argv, args.routing, args.arg + args.against_arg)
                   for _, _, argv in todo]
            pairs = [(a.result(), b.result()) for a, b in zip(base, new, strict=True)]
    labels = [label for _, _, label in METRICS]
    for suite in suites:
        print(f"\n{suite}: changed over as it is")
        logs: list[list[float]] = [[] for _ in labels]
        for (s, label, _), (a, b) in zip(todo, pairs, strict=True):
            if s != suite:
                continue
            ratios = [y / x if x > 0 else math.nan for x, y in zip(a, b, strict=True)]
            for log, r in zip(logs, ratios, strict=True):
                log.append(math.log(r))
            print(f"  {label:<24} " + "  ".join(
                f"{name} {x:.3f} -> {y:.3f} ({r:.3f}x)"
                for name, x, y, r in zip(labels, a, b, ratios, strict=True)))
        print("  geometric mean: " + ", ".join(
            f"{name} {math.exp(sum(v) / len(v)):.3f}x ({math.exp(min(v)):.3f}-"
            f"{math.exp(max(v)):.3f}x)" for name, v in zip(labels, logs, strict=True)))


if __name__ == "__main__":
    main()
