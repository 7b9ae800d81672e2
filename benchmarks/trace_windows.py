"""A routing policy as it is against as changed, run by run on windows of a trace.

Is a change better on a trace, or did one run of it happen to move? This runs the policy
as it is and as changed on several windows of a trace, at several loads, and compares
them run by run.

The preset's trace cells (``kvroute compare --routers --trace``) are one run each for a
policy that draws nothing at random (every seed replays the same trace), and such a run
moves by several percent with any change of decisions (docs/routing-results.md, "Chat with
longer replies"). Windows of the trace are runs that differ in their traffic, so a change
that wins on most of them wins on the trace, and one that wins on one window only does not.

    PYTHONPATH=src python benchmarks/trace_windows.py --against /tmp/other/src
        [--routing learned] [--arg K=V ...] [--against-arg K=V ...]
        [--trace TRACE] [--loads 0.5,0.8,0.95] [--windows 4] [--limit 2000] [--jobs 2]

``--against`` is another checkout's ``src`` (``git worktree add /tmp/other COMMIT``; this
tree's ``src`` when left out, to compare policy arguments: ``--against-arg``). Each run is
``kvroute sim --trace TRACE --start S --limit LIMIT --load L --routing R --eviction rlt``;
the windows' starts are spread evenly over the trace. Prints each run's mean E2E, mean
TTFT and p99 TTFT, as changed over as it is, and their geometric means, lowest and
highest. About 4 minutes for the defaults with the repository's trace.
"""

from __future__ import annotations

import argparse
import math
import os
from concurrent.futures import ThreadPoolExecutor

from same_decisions import TRACE, kvroute

METRICS = (("e2e_s", "mean", "mean E2E"), ("ttft_s", "mean", "mean TTFT"),
           ("ttft_s", "p99", "p99 TTFT"))


def starts(trace: str, windows: int, limit: int) -> list[int]:
    with open(trace) as f:
        total = sum(1 for line in f if line.strip())
    last = max(0, total - limit)
    if windows == 1:
        return [0]
    return sorted({round(i * last / (windows - 1)) for i in range(windows)})


def run(src: str, args: argparse.Namespace, policy_args: list[str], load: str,
        start: int) -> dict[str, float]:
    flags = [f for a in policy_args for f in ("--policy-arg", a)]
    out = kvroute(src, ["sim", "--trace", args.trace, "--start", str(start), "--limit",
                        str(args.limit), "--load", load, "--routing", args.routing,
                        "--eviction", "rlt", "--no-ceilings", *flags])
    summary = out["runs"][0]["summary"]
    return {label: float(summary[key][stat]) for key, stat, label in METRICS}


def add_versions(ap: argparse.ArgumentParser) -> None:
    """The two versions compared: ``--src`` as it is, ``--against`` (another ``src``)
    and/or ``--against-arg`` as changed; ``--routing`` and ``--arg`` for both."""
    ap.add_argument("--src", default="src", help="the policy as it is (default: ./src)")
    ap.add_argument("--against", default=None, help="the policy as changed: another src")
    ap.add_argument("--routing", default="learned")
    ap.add_argument("--arg", action="append", default=[], metavar="K=V",
                    help="a policy argument for both")
    ap.add_argument("--against-arg", action="append", default=[], metavar="K=V",
                    help="a policy argument for the changed one only")


def check_versions(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exit with a usage error unless there is something to compare, from checkouts."""
    if args.against is None and not args.against_arg:
        ap.error("nothing to compare: pass --against SRC and/or --against-arg K=V")
    for src in (args.src, args.against):
        if src is not None and not os.path.isfile(os.path.join(src, "kvroute", "__init__.py")):
            ap.error(f"{src}: no kvroute package there (give a checkout's src folder)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_versions(ap)
    ap.add_argument("--trace", default=TRACE if os.path.exists(TRACE) else None)
    ap.add_argument("--loads", default="0.5,0.8,0.95")
    ap.add_argument("--windows", type=int, default=4)
    ap.add_argument("--limit", type=int, default=2000, help="requests per window")
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    if args.trace is None:
        ap.error("no trace: pass --trace FILE (Mooncake format)")
    if not os.path.isfile(args.trace):
        ap.error(f"{args.trace}: trace file not found")
    if args.windows < 1 or args.limit < 1 or args.jobs < 1:
        ap.error("--windows, --limit and --jobs must be >= 1")
    check_versions(ap, args)
    changed_src = args.against or args.src
    cells = [(load, s) for load in args.loads.split(",")
             for s in starts(args.trace, args.windows, args.limit)]
    print(f"{len(cells)} windows x 2 versions of {args.routing}, {args.jobs} at a time...",
          flush=True)
    with ThreadPoolExecutor(args.jobs) as pool:
        base = [pool.submit(run, args.src, args, args.arg, load, s) for load, s in cells]
        new = [pool.submit(run, changed_src, args, args.arg + args.against_arg, load, s)
               for load, s in cells]
        pairs = [(a.result(), b.result()) for a, b in zip(base, new, strict=True)]
    labels = [label for _, _, label in METRICS]
    print("load  start  " + "  ".join(f"{label}: as is -> changed (ratio)" for label in labels))
    logs: dict[str, list[float]] = {label: [] for label in labels}
    for (load, s), (a, b) in zip(cells, pairs, strict=True):
        parts = []
        for label in labels:
            ratio = b[label] / a[label] if a[label] > 0 else math.nan
            logs[label].append(math.log(ratio))
            parts.append(f"{a[label]:.3f} -> {b[label]:.3f} ({ratio:.3f}x)")
        print(f"{load:>4}  {s:>5}  " + "  ".join(parts))
    for label in labels:
        v = logs[label]
        print(f"{label}, changed over as it is: geometric mean "
              f"{math.exp(sum(v) / len(v)):.3f}x, lowest {math.exp(min(v)):.3f}x, highest "
              f"{math.exp(max(v)):.3f}x (below 1: the change is faster)")


if __name__ == "__main__":
    main()
