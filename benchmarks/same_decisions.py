"""Did a change keep every decision? Record what a routing and an eviction policy decide
on a fixed set of simulator runs and one-cache replays, then compare two records.

    PYTHONPATH=src python benchmarks/same_decisions.py record before.json
    # ... change the code ...
    PYTHONPATH=src python benchmarks/same_decisions.py record after.json
    python benchmarks/same_decisions.py compare before.json after.json

For speed work on a policy (docs/routing-results.md and docs/cache.md quote tables that
stay current only while the decisions do). To record another commit, check it out beside
this one (``git worktree add /tmp/old COMMIT``) and pass ``--src /tmp/old/src``.

A simulator run's record is each request's worker and finish time, so two records agree
only if every routing decision and every latency is the same; a replay's is each
policy's hit and evicted units. The runs (``--routing`` with eviction ``rlt``): GSP at 12
requests/s (seeds 1, 2); GSP at load 0.9 with half the requests streamed, and with none
streamed, no cached-token reports and no ``max_tokens``; GSP with two of four workers at
half speed; LooGLE and open-loop ShareGPT at load 0.8; with ``--trace``, its first 1,500
requests at loads 0.8 and 0.95 and 1,000 with one slow worker. The replays (``rlt`` and
``--eviction``, seeds 1 and 2): GSP at 200,000 tokens in 16-token pages, the adversarial
cycle, the trace in blocks at 1%, 5% and 10%. About 20 seconds with the trace.
``compare`` exits with 1 if any case differs or is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from typing import Any

TRACE = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "traces",
                     "mooncake_synthetic_trace.jsonl")


def sim_cases(trace: str | None) -> dict[str, list[str]]:
    gsp = ["--workload", "gsp"]
    cases = {f"gsp rate 12 seed {s}": [*gsp, "--rate", "12", "--seed", str(s)] for s in (1, 2)}
    cases["gsp 0.9 half streamed"] = [*gsp, "--load", "0.9", "--stream-share", "0.5"]
    cases["gsp 0.9 none streamed, no reports, no max_tokens"] = [
        *gsp, "--load", "0.9", "--stream-share", "0", "--no-cached-report",
        "--max-tokens", "none"]
    cases["gsp 0.8 speeds 1,1,0.5,0.5"] = [*gsp, "--load", "0.8", "--speeds", "1,1,0.5,0.5"]
    cases["loogle 0.8"] = ["--workload", "loogle", "--load", "0.8"]
    cases["sharegpt open 0.8"] = ["--workload", "sharegpt", "--mode", "open", "--load", "0.8"]
    if trace:
        for load in ("0.8", "0.95"):
            cases[f"trace 1500 at {load}"] = ["--trace", trace, "--limit", "1500", "--load", load]
        cases["trace 1000 speeds 1,0.5,1,1"] = ["--trace", trace, "--limit", "1000", "--load",
                                                "0.8", "--speeds", "1,0.5,1,1"]
    return cases


def cache_cases(trace: str | None) -> dict[str, list[str]]:
    cases = {"gsp 200000, 16-token pages": ["--workload", "gsp", "--page-size", "16"],
             "adversarial": ["--workload", "adversarial"]}
    if trace:
        cases["trace blocks 1%,5%,10%"] = ["--trace", trace, "--capacity", "1%,5%,10%"]
    return cases


def kvroute(src: str, args: list[str]) -> dict[str, Any]:
    """``python -m kvroute ARGS --json TMP`` importing kvroute from ``src``; the JSON."""
    env = dict(os.environ, PYTHONPATH=os.path.abspath(src))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "out.json")
        done = subprocess.run([sys.executable, "-m", "kvroute", *args, "--json", path],
                              env=env, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"kvroute {' '.join(args)} failed:\n{done.stderr.strip()}")
        with open(path) as f:
            out: dict[str, Any] = json.load(f)
            return out


def record(args: argparse.Namespace) -> None:
    cases: dict[str, Any] = {}
    todo = ([] if args.routing == "none" else
            [("sim", k, v) for k, v in sim_cases(args.trace).items()])
    todo += ([] if args.eviction == "none" else
             [("cache", k, v) for k, v in cache_cases(args.trace).items()])
    for i, (kind, key, case) in enumerate(todo, 1):
        print(f"[{i}/{len(todo)}] {kind}: {key}", flush=True)
        if kind == "sim":
            run = kvroute(args.src, ["sim", *case, "--routing", args.routing, "--eviction",
                                     "rlt", "--no-ceilings"])["runs"][0]
            cases[f"sim {args.routing}: {key}"] = {
                "workers": run["requests"]["worker"], "finish": run["requests"]["finish"],
                "e2e_mean": run["summary"]["e2e_s"]["mean"]}
        else:
            policies = list(dict.fromkeys(("rlt", args.eviction)))  # rlt once
            for seed in (1, 2):
                out = kvroute(args.src, ["cache", *case, "--policies", *policies,
                                         "--seed", str(seed)])
                cases[f"cache {args.eviction}: {key}, seed {seed}"] = [
                    {"capacity": res["capacity"], "policy": row["policy"],
                     "hit_units": row["hit_units"], "evicted_units": row["evicted_units"]}
                    for res in out["results"] for row in res["policies"]]
    with open(args.out, "w") as f:
        json.dump({"src": os.path.abspath(args.src), "cases": cases}, f)
    print(f"wrote {args.out} ({len(cases)} cases)")


def read_record(path: str) -> dict[str, Any]:
    try:
        with open(path) as f:
            cases: dict[str, Any] = json.load(f)["cases"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        sys.exit(f"{path}: not a record of same_decisions.py record ({e!r})")
    return cases


def compare(args: argparse.Namespace) -> int:
    before, after = read_record(args.before), read_record(args.after)
    differ = 0
    for key in sorted(before.keys() | after.keys()):
        a, b = before.get(key), after.get(key)
        if a is None or b is None:
            print(f"{key}: only in {args.before if b is None else args.after}")
            differ += 1
        elif a == b:
            print(f"{key}: same")
        elif isinstance(a, dict):  # a simulator run
            wa, wb = a["workers"], b["workers"]
            moved = [i for i, (x, y) in enumerate(zip(wa, wb, strict=False)) if x != y]
            first = f", the first at request {moved[0]}" if moved else ""
            count = "" if len(wa) == len(wb) else f" ({len(wa)} -> {len(wb)} requests)"
            print(f"{key}: DIFFERENT{count}: {len(moved)} of {len(wa)} requests routed "
                  f"elsewhere{first}; mean E2E {a['e2e_mean']:.4f} -> {b['e2e_mean']:.4f} s")
            differ += 1
        else:  # a replay
            print(f"{key}: DIFFERENT: hit / evicted units " + ", ".join(
                f"{x['policy']} at {x['capacity']} {x['hit_units']} / {x['evicted_units']} -> "
                f"{y['hit_units']} / {y['evicted_units']}"
                for x, y in zip(a, b, strict=False) if x != y))
            differ += 1
    print(f"{differ} of {len(before.keys() | after.keys())} cases differ")
    return 1 if differ else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record", help="run the cases and write their decisions")
    rec.add_argument("out", help="the JSON file to write")
    rec.add_argument("--src", default="src", help="where kvroute is imported from (src)")
    rec.add_argument("--routing", default="learned", help="routing policy ('none': skip)")
    rec.add_argument("--eviction", default="learned", help="eviction policy ('none': skip)")
    rec.add_argument("--trace", default=TRACE if os.path.exists(TRACE) else None,
                     help="a Mooncake-format trace (default: ../shared's, if present)")
    cmp = sub.add_parser("compare", help="compare two records")
    cmp.add_argument("before")
    cmp.add_argument("after")
    args = ap.parse_args()
    if args.command == "record":
        record(args)
    else:
        sys.exit(compare(args))


if __name__ == "__main__":
    main()
