"""A fast design loop for a routing policy: its rows of the routing preset, scored against
the other policies' rows already generated into docs/routing-results.md.

    PYTHONPATH=src python benchmarks/router_design_loop.py \
        [--routing learned] [--policy-arg KEY=VALUE ...] [--seeds 4,5,6] \
        [--trace ../shared/traces/mooncake_synthetic_trace.jsonl]

``kvroute compare --routers`` runs every registered policy (about 15 minutes on 2 cores); a change
to one policy changes only its own rows. This script runs the preset for that one policy
(about 40 seconds for ``learned``) and prints what the preset would: its geometric-mean
advantage over the best other non-oracle policy of each cell (mean E2E, mean TTFT, p99
TTFT), how many cells it is within 2% of the best on mean E2E and mean TTFT, and its worst
cells. The other policies' values are read from the doc's generated tables: the design
seeds 1,2,3 (``routers``, the default) or the check seeds 4,5,6 (``routers-check``), so
the score is the preset's only while those rows are current. Design on the first, check
on the second before reporting.

Other cluster sizes and profiles: ``--rows RUNS.json`` reads the other policies' rows from a
``kvroute compare --routers ... --out DIR`` run instead (its ``DIR/runs.json``), and
``--workers``, ``--profile``, ``--speeds`` and ``-o`` are passed on, so the policy runs on
the same grid, e.g. 8 workers (docs/routing-results.md, "Off the design grid"):

    kvroute compare --routers --workers 8 \
        --routings cache_aware_v2,prefix_hash,dynamo,least_load,llmd,lbgr,lmetric,loadaware \
        --seeds 1,2,3 --trace TRACE -o mooncake.limit=1500 --no-ceilings --out /tmp/w8
    PYTHONPATH=src python benchmarks/router_design_loop.py --rows /tmp/w8/runs.json \
        --workers 8 -o mooncake.limit=1500

or a smaller KV pool, without the Mooncake cells (its longest requests do not fit):
``--rows /tmp/cap80/runs.json --capacity 80000 --trace none``.

``--max-tokens none`` runs the policy with no output length sent (``N``: a cap of N
tokens sent), ``--no-cached-report`` with no cached tokens reported, ``--stream-share S``
with only that share of first tokens seen (``kvroute compare``'s flags), against the
doc's rows, which had all three: for the policies that read them the score is a lower
bound.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile

DOC = os.path.join(os.path.dirname(__file__), "..", "docs", "routing-results.md")
TRACE = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "traces",
                     "mooncake_synthetic_trace.jsonl")
METRICS = {"e2e": ("e2e_mean", 9), "ttft": ("ttft_mean", 7), "p99": ("ttft_p99", 8)}


def cell(workload: str, order: str, load: str | float) -> tuple[str, str, float]:
    return workload, order if workload == "gsp" else "", float(load)


SECTIONS = {"1,2,3": "routers", "4,5,6": "routers-check"}  # seeds -> the doc's rows


def best_others(doc: str, section: str,
                routing: str) -> dict[tuple[str, str, float], dict[str, float]]:
    """Per cell and metric, the lowest value among the doc's rows (in ``section``) of the
    other non-oracle policies."""
    with open(doc, encoding="utf-8") as f:
        text = f.read()
    begin, end = f"<!-- BEGIN {section} -->", f"<!-- END {section} -->"
    if begin not in text:
        sys.exit(f"{doc} has no generated {section} table")
    rows = text.split(begin)[1].split(end)[0]
    best: dict[tuple[str, str, float], dict[str, float]] = {}
    for line in rows.splitlines():
        c = [x.strip() for x in line.strip().strip("|").split("|")]
        if len(c) < 11 or c[0] in ("workload", "---") or c[4] in (routing, "oracle"):
            continue
        b = best.setdefault(cell(c[0], c[1], c[2]), {})
        for name, (_, col) in METRICS.items():
            b[name] = min(b.get(name, math.inf), float(c[col]))
    return best


def best_in_rows(path: str, routing: str) -> dict[tuple[str, str, float], dict[str, float]]:
    """The same from a ``kvroute compare`` runs.json (its ``rows``: means over seeds)."""
    with open(path, encoding="utf-8") as f:
        rows = json.load(f)["rows"]
    best: dict[tuple[str, str, float], dict[str, float]] = {}
    for r in rows:
        if r["routing"] in (routing, "oracle"):
            continue
        b = best.setdefault(cell(r["workload"], r["order"] or "", r["load"]), {})
        for name, (field, _) in METRICS.items():
            b[name] = min(b.get(name, math.inf), float(r[field]))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--routing", default="learned", help="the policy under design")
    ap.add_argument("--policy-arg", action="append", default=[], metavar="KEY=VALUE",
                    help="a parameter of the policy (repeat for more)")
    ap.add_argument("--seeds", default="1,2,3",
                    help="design (1,2,3) or check (4,5,6) seeds; with --rows, the run's")
    ap.add_argument("--trace", default=TRACE,
                    help="the Mooncake trace of the preset ('none': no Mooncake cells, for "
                         "--rows of a run without them)")
    ap.add_argument("--doc", default=DOC, help="where the other policies' rows are")
    ap.add_argument("--worst", type=int, default=5, help="how many of the worst cells to list")
    ap.add_argument("--rows", help="a compare runs.json with the other policies' rows "
                    "(instead of --doc)")
    ap.add_argument("--workers", type=int, help="simulated workers (with --rows)")
    ap.add_argument("--profile", help="step-time profile passed to compare (with --rows)")
    ap.add_argument("--speeds", help="workers' speeds passed to compare (with --rows)")
    ap.add_argument("--capacity", type=int, help="KV pool per worker passed to compare "
                    "(with --rows)")
    ap.add_argument("--router-replicas", type=int, default=1, metavar="R",
                    help="routers sharing the workers, passed to compare (with --rows)")
    ap.add_argument("-o", "--option", action="append", default=[], metavar="WL.KEY=VALUE",
                    help="a workload option passed to compare (with --rows)")
    ap.add_argument("--max-tokens", default="exact", metavar="exact|none|N",
                    help="what the policy is told of each request's output (compare's flag)")
    ap.add_argument("--no-cached-report", dest="report_cached", action="store_false",
                    help="the workers report no cached tokens (compare's flag)")
    ap.add_argument("--stream-share", type=float, default=1.0,
                    help="the share of requests that stream (compare's flag)")
    args = ap.parse_args()
    if args.trace != "none" and not os.path.exists(args.trace):
        sys.exit(f"no trace at {args.trace}: give --trace (the preset's Mooncake cells)")
    if args.rows:
        best = best_in_rows(args.rows, args.routing)
    else:
        if args.workers or args.option or args.profile or args.speeds or args.capacity \
                or args.trace == "none" or args.router_replicas > 1:
            sys.exit("--workers, --profile, --speeds, --capacity, --router-replicas, -o and "
                     "--trace none need --rows: the doc's rows are the preset's")
        if args.seeds not in SECTIONS:
            sys.exit(f"the doc has rows for seeds {' or '.join(SECTIONS)}; for others, --rows")
        best = best_others(args.doc, SECTIONS[args.seeds], args.routing)
    if not best:
        sys.exit(f"no rows of other policies for seeds {args.seeds}: generate them first")
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "kvroute", "compare", "--routers", "--routings",
               args.routing, "--seeds", args.seeds, "--no-ceilings",
               "--jobs", str(min(2, os.cpu_count() or 1)), "--out", out]
        if args.trace != "none":
            cmd += ["--trace", args.trace]
        for a in args.policy_arg:
            cmd += ["--policy-arg", a]
        for o in args.option:
            cmd += ["-o", o]
        if args.workers:
            cmd += ["--workers", str(args.workers)]
        if args.profile:
            cmd += ["--profile", args.profile]
        if args.speeds:
            cmd += ["--speeds", args.speeds]
        if args.capacity:
            cmd += ["--capacity", str(args.capacity)]
        if args.router_replicas > 1:
            cmd += ["--router-replicas", str(args.router_replicas)]
        cmd += ["--max-tokens", args.max_tokens]
        if not args.report_cached:
            cmd += ["--no-cached-report"]
        if args.stream_share < 1:
            cmd += ["--stream-share", str(args.stream_share)]
        done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True, check=False)
        if done.returncode:
            sys.exit(done.stderr.strip() or f"kvroute compare exited {done.returncode}")
        with open(os.path.join(out, "runs.json"), encoding="utf-8") as f:
            rows = json.load(f)["rows"]
    adv: dict[str, list[float]] = {name: [] for name in METRICS}
    cells = []
    for r in rows:
        b = best.get(cell(r["workload"], r["order"], r["load"]))
        if b is None:
            sys.exit(f"no other policy's row for {r['workload']} {r['order']} @{r['load']}: "
                     "the rows and this run must be the same grid")
        a = {name: b[name] / r[field] for name, (field, _) in METRICS.items()}
        for name in METRICS:
            adv[name].append(a[name])
        order = f" {r['order']}" if r["workload"] == "gsp" else ""
        cells.append((a["e2e"], a["ttft"], a["p99"], f"{r['workload']}{order} @{r['load']}",
                      r["hit_rate"]))
    geo = {name: math.exp(sum(map(math.log, v)) / len(v)) for name, v in adv.items()}
    told = "".join(f" ({what})" for what, on in (("no max_tokens", args.max_tokens == "none"),
                                                  (f"max_tokens {args.max_tokens}",
                                                   args.max_tokens not in ("exact", "none")),
                                                  ("no cached reports", not args.report_cached),
                                                  (f"{args.stream_share:.0%} streamed",
                                                   args.stream_share < 1))
                   if on)
    print(f"{' '.join([args.routing, *args.policy_arg])}{told}: geo-mean advantage, "
          f"seeds {args.seeds}: "
          f"E2E {geo['e2e']:.3f}x, TTFT {geo['ttft']:.3f}x, p99 TTFT {geo['p99']:.3f}x; "
          f"within 2% on E2E in {sum(c[0] >= 0.98 for c in cells)} of {len(cells)} cells, "
          f"on TTFT in {sum(c[1] >= 0.98 for c in cells)}")
    for e2e, ttft, p99, name, hit in sorted(cells)[:args.worst]:
        print(f"  {name}: E2E {e2e:.3f}x, TTFT {ttft:.3f}x, p99 TTFT {p99:.3f}x, "
              f"hit rate {hit:.3f}")


if __name__ == "__main__":
    main()
