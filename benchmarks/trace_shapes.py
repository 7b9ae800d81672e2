"""Routing policies on trace shapes nobody designed on: a check of how ``learned`` generalises.

    PYTHONPATH=src python benchmarks/trace_shapes.py [--seeds 1,2,3] [--out DIR]
        [--shapes conversation,agentic] [--requests 1500] [--loads 0.5,0.8,0.95]

For each shape of :data:`kvroute.workloads.mooncake_synth.SHAPES` (invented variations of
the fitted Mooncake model: multi-turn conversations, agent sessions whose prompts grow
by a tool call at a time, and ``fresh`` / ``fresh_short``, traffic with no reuse at all;
the default is the first two) and each seed, it writes a synthetic trace of ``--requests``
requests (the seed draws the trace: each one is an independent sample), runs
``kvroute compare --workloads mooncake --trace ...`` on it (eviction ``rlt``, 4 workers,
the routing policies below, router seed 1), and prints per shape and load the means over
the seeds: ``learned``'s mean E2E, its advantage (``x``) over the best other non-oracle
policy on mean E2E, mean TTFT and p99 TTFT (above 1 it beats all of them), its rank by mean E2E
among all of them, and ``oracle``'s mean E2E over ``learned``'s. About 15 s per trace
on 2 cores; with ``--out`` the runs are kept and reused, and ``--others DIR`` (an earlier
``--out``) runs only ``learned`` and scores it against the other policies' rows there;
``--policy-arg KEY=VALUE`` sets a parameter of ``learned`` (a variant, with ``--others``).

Three features of Mooncake's public conversation trace (its opening lines: every request
begins with the same block, arrivals on a 3-second grid, outputs of hundreds of tokens)
can be laid over any shape: ``--shared-block`` puts one block shared by all requests in
front of every prompt, ``--grid-ms 3000`` rounds each arrival down to a multiple of 3 s,
``--output-scale 2.3`` multiplies each output length (docs/routing-results.md, "Trace
shapes nobody designed on"; the shape ``mooncake`` is the fitted synthetic trace).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections import defaultdict
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from kvroute.workloads.mooncake import MooncakeRecord, write_mooncake
from kvroute.workloads.mooncake_synth import SHAPES, synth_records

ROUTINGS = ("learned,cache_aware_v2,prefix_hash,dynamo,least_load,llmd,lbgr,lmetric,"
            "loadaware,ray_prefix,oracle")
METRICS = ("e2e_mean", "ttft_mean", "ttft_p99")


def featured(r: MooncakeRecord, args: argparse.Namespace, block_size: int) -> MooncakeRecord:
    """``r`` with the features the flags ask for (the module doc)."""
    ids, length = r.hash_ids, r.input_length
    if args.shared_block:  # block 0 in front of all; the trace's own ids move up by one
        ids, length = np.concatenate([[0], ids + 1]), length + block_size
    ts = r.timestamp // args.grid_ms * args.grid_ms if args.grid_ms else r.timestamp
    out = max(1, round(r.output_length * args.output_scale))
    return MooncakeRecord(ts, length, out, ids)


def run_trace(shape: str, seed: int, args: argparse.Namespace, out: str) -> list[dict[str, Any]]:
    """The compare rows of one synthetic trace (reused if ``out`` holds them already)."""
    where = os.path.join(out, f"{shape}_{seed}")
    runs = os.path.join(where, "runs.json")
    others: list[dict[str, Any]] = []
    if args.others:  # the other policies' rows, and the trace, from an earlier --out
        base = os.path.join(args.others, f"{shape}_{seed}")
        try:
            with open(os.path.join(base, "runs.json"), encoding="utf-8") as f:
                others = [r for r in json.load(f)["rows"] if r["routing"] != "learned"]
        except (OSError, ValueError, KeyError) as e:
            sys.exit(f"--others: no earlier run of {shape}, trace seed {seed} in "
                     f"{args.others} ({e})")
    if not os.path.exists(runs):
        os.makedirs(where, exist_ok=True)
        trace = os.path.join(base if args.others else where, "trace.jsonl")
        if not args.others:
            write_mooncake(trace, [featured(r, args, SHAPES[shape].block_size)
                                   for r in synth_records(args.requests, SHAPES[shape], seed)])
        routings = "learned" if args.others else args.routings
        cmd = [sys.executable, "-m", "kvroute", "compare", "--workloads", "mooncake",
               "--trace", trace, "--evictions", "rlt", "--routings", routings,
               "--loads", args.loads, "--seeds", "1", "--no-ceilings", "--no-plot",
               "--jobs", str(args.jobs), "--out", where]
        for a in args.policy_arg:
            cmd += ["--policy-arg", f"learned.{a}"]
        if args.max_tokens:
            cmd += ["--max-tokens", args.max_tokens]
        if args.mixed_chunk:
            cmd.append("--mixed-chunk")
        if args.max_running:
            cmd += ["--max-running", str(args.max_running)]
        done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True, check=False)
        if done.returncode:
            sys.exit(done.stderr.strip() or f"kvroute compare exited {done.returncode}")
    with open(runs, encoding="utf-8") as f:
        rows: list[dict[str, Any]] = json.load(f)["rows"]
    if args.others:  # learned's rows from this run, the others' from the earlier one
        rows = [r for r in rows if r["routing"] == "learned"]
    return rows + others


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shapes", default="conversation,agentic")
    ap.add_argument("--seeds", default="1,2,3", help="trace seeds (design 1,2,3; check 4,5,6)")
    ap.add_argument("--requests", type=int, default=1500)
    ap.add_argument("--loads", default="0.5,0.8,0.95")
    ap.add_argument("--routings", default=ROUTINGS, help="must include learned and oracle")
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--out", help="keep the runs here (and reuse those already there)")
    ap.add_argument("--others", metavar="DIR",
                    help="run only learned on the traces in DIR (an earlier --out with the "
                         "same --loads) and score it against the other policies' rows there: "
                         "a check of a change to learned in about 15 s")
    ap.add_argument("--policy-arg", action="append", default=[], metavar="KEY=VALUE",
                    help="a parameter of learned (repeat for more), e.g. with --others to "
                         "score a variant; runs already in --out are reused as they are")
    ap.add_argument("--shared-block", action="store_true",
                    help="one block shared by every request in front of each prompt")
    ap.add_argument("--grid-ms", type=int, default=0,
                    help="round each arrival down to a multiple of this many ms (0: off)")
    ap.add_argument("--output-scale", type=float, default=1.0,
                    help="multiply each output length by this")
    ap.add_argument("--max-tokens", metavar="none|N",
                    help="what the clients send as max_tokens (kvroute compare's flag; "
                         "default: each request's output length)")
    ap.add_argument("--mixed-chunk", action="store_true",
                    help="engines that run decodes inside prefill steps, as vLLM does")
    ap.add_argument("--max-running", type=int, metavar="N",
                    help="engines that run at most N requests at once (kvroute compare's flag)")
    args = ap.parse_args()
    if args.grid_ms < 0 or not args.output_scale > 0:
        sys.exit("--grid-ms must be >= 0 and --output-scale > 0")
    shapes = args.shapes.split(",")
    unknown = [s for s in shapes if s not in SHAPES]
    if unknown:
        sys.exit(f"unknown shape {unknown[0]!r}; choose from {', '.join(SHAPES)}")
    if not {"learned", "oracle"} <= set(args.routings.split(",")):
        sys.exit("--routings must include learned and oracle")
    seeds = [int(s) for s in args.seeds.split(",")]
    console = Console(width=110)
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or tmp
        for shape in shapes:
            # (load, routing) -> metric -> values over the seeds
            values: dict[tuple[float, str], dict[str, list[float]]] = defaultdict(
                lambda: defaultdict(list))
            for seed in seeds:
                console.print(f"{shape}, trace seed {seed} ...")
                for r in run_trace(shape, seed, args, out):
                    for m in METRICS:
                        values[(r["load"], r["routing"])][m].append(r[m])
            n_others = len(args.routings.split(",")) - 1
            extra = "".join(f", {x}" for x, on in (
                ("a shared first block", args.shared_block),
                (f"arrivals on a {args.grid_ms} ms grid", args.grid_ms),
                (f"outputs x{args.output_scale:g}", args.output_scale != 1.0),
                (f"max_tokens {args.max_tokens}", args.max_tokens),
                ("mixed chunks", args.mixed_chunk),
                (f"at most {args.max_running} running", args.max_running)) if on)
            table = Table(title=f"{shape} shape{extra}, {args.requests:,} requests, trace seeds "
                                f"{args.seeds}: learned against {n_others} others "
                                "(means over the seeds)")
            for col in ("load", "E2E s", "x E2E", "x TTFT", "x p99 TTFT", "best other",
                        "rank", "oracle/learned"):
                table.add_column(col, justify="right")
            for load in sorted({load for load, _ in values}):
                mean = {rt: {m: sum(v) / len(v) for m, v in ms.items()}
                        for (ld, rt), ms in values.items() if ld == load}
                others = {rt: v for rt, v in mean.items() if rt not in ("learned", "oracle")}
                mine = mean["learned"]
                adv = {m: min(v[m] for v in others.values()) / mine[m] for m in METRICS}
                best = min(others, key=lambda rt: others[rt]["e2e_mean"])
                rank = sorted(mean, key=lambda rt: mean[rt]["e2e_mean"]).index("learned") + 1
                table.add_row(f"{load:g}", f"{mine['e2e_mean']:.3f}",
                              *(f"{adv[m]:.3f}x" for m in METRICS), best,
                              f"{rank} of {len(mean)}",
                              f"{mean['oracle']['e2e_mean'] / mine['e2e_mean']:.3f}")
            console.print(table)


if __name__ == "__main__":
    main()
