"""Routing policies on workloads drawn at random: how ``learned`` does where nobody looked.

    PYTHONPATH=src python benchmarks/router_random_grid.py [--draws 1-30] [--out DIR]
        [--seeds 1,2] [--others DIR] [--policy-arg KEY=VALUE ...] [--routings A,B,...]

The preset (``kvroute compare --routers``) and the other benches fix a handful of
workloads; a policy tuned on them may fail on a workload between or beyond them. Each
*draw* here is one workload configuration drawn from wide ranges by its own seeded
generator (the draw number is the seed: the same draw is the same configuration on any
machine), run per policy (eviction ``rlt``) with ``--seeds`` (default 1,2: each seed
draws the workload's requests and the router's choices anew, the configuration stays;
a trace draw replays one trace, drawn by the draw number, and its seeds change only the
seeded policies):

* the workload: GSP (4-64 prompts a group, prefix share 0.1-0.95, 1-5 prompt lengths
  from 256 to 16,384 tokens, any order), LooGLE (documents of 1-4 lengths from 1,024 to
  16,384 tokens, 4-64 questions each), open-loop chat (1-3 conversation lengths of 1-12
  turns, 128-4,096 tokens a user turn), each with 16-256 groups, documents or clients
  within 500-2,000 requests (fewer, and a few early placements decide a draw), or a
  synthetic Mooncake-format trace of 800-1,500 requests (the fitted model or its
  conversation / agentic shapes, with the share of requests that continue an earlier
  one drawn from 0 to 0.95);
* output lengths from 1 to 512 tokens (log-uniform; a trace's outputs scaled by that over
  64), 2, 4, 8 or 16 workers, offered load 0.3-1.0.

It prints per draw ``learned``'s advantage over the best other policy (the best other's
value / ``learned``'s: above 1 it beats all of them) on mean E2E, mean TTFT and p99 TTFT,
its rank by mean E2E (means over the seeds), and the geometric means and worst draws over
all. Draws 1-30 are the design set and 31-60 the check set; a draw takes 5-30 s a seed on
2 cores. One draw is noisy: with one seed, a draw that had ``learned`` 16% behind had it
3% behind on seeds 2-4, and one 5% behind had it 1%; read the geometric means, and run a
draw's configuration on more seeds before drawing conclusions from it. With ``--out``
the runs are kept and reused; ``--others DIR`` (an earlier ``--out``) runs only
``learned`` (with ``--policy-arg``: a variant) and scores it against the others' rows
there; for a change to the code, run it with ``PYTHONPATH`` at the changed ``src`` (the
runs are ``python -m kvroute compare`` in that environment). ``--eviction`` compares
``learned`` eviction with ``rlt`` instead, both under ``learned`` routing
(``--policy-arg`` then sets a parameter of the eviction policy).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from dataclasses import replace
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from kvroute.workloads.mooncake import write_mooncake
from kvroute.workloads.mooncake_synth import SHAPES, synth_records
from trace_shapes import featured

ROUTINGS = ("learned,cache_aware_v2,prefix_hash,dynamo,least_load,llmd,lbgr,lmetric,"
            "loadaware,ray_prefix")
METRICS = ("e2e_mean", "ttft_mean", "ttft_p99")
MIN_REQUESTS, MAX_REQUESTS = 500, 2000  # fewer: a few early placements decide the draw


def _count(rng: np.random.Generator, per: float) -> int:
    """How many groups, documents or clients, each bringing ``per`` requests on average:
    log-uniform in 16-256, within the request bounds."""
    return max(math.ceil(MIN_REQUESTS / per), min(_log_int(rng, 16, 256), int(MAX_REQUESTS / per)))


def _log_int(rng: np.random.Generator, lo: float, hi: float) -> int:
    return round(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _lengths(rng: np.random.Generator, choices: list[int], most: int) -> list[int]:
    k = int(rng.integers(1, most + 1))
    return sorted(int(x) for x in rng.choice(choices, size=k, replace=False))


def draw(n: int) -> dict[str, Any]:
    """Draw ``n``'s configuration: the workload, its ``-o`` options, the cluster and load."""
    rng = np.random.default_rng([7919, n])
    workload = str(rng.choice(["gsp", "loogle", "sharegpt", "trace"]))
    out_len = _log_int(rng, 1, 512)
    opts: dict[str, Any] = {}
    cfg: dict[str, Any] = {"workload": workload, "workers": int(rng.choice([2, 4, 8, 16])),
                           "load": round(float(rng.uniform(0.3, 1.0)), 2)}
    if workload == "gsp":
        per = _log_int(rng, 4, 64)
        opts = {"groups": _count(rng, per), "prompts_per_group": per,
                "prefix_ratio": round(float(rng.uniform(0.1, 0.95)), 2),
                "lengths": _lengths(rng, [256, 512, 1024, 2048, 4096, 8192, 16384], 5),
                "output_len": out_len}
        cfg["order"] = str(rng.choice(["random", "grouped", "round_robin"]))
    elif workload == "loogle":
        per = _log_int(rng, 4, 64)
        opts = {"documents": _count(rng, per), "questions_per_doc": per,
                "doc_lengths": _lengths(rng, [1024, 2048, 4096, 8192, 16384], 4),
                "output_len": out_len}
    elif workload == "sharegpt":
        turns = _lengths(rng, [1, 2, 4, 6, 8, 12], 3)
        opts = {"mode": "open", "clients": _count(rng, sum(turns) / len(turns)),
                "user_tokens": _log_int(rng, 128, 4096), "turns": turns, "output_len": out_len}
    else:
        cfg["shape"] = str(rng.choice(["mooncake", "conversation", "agentic"]))
        cfg["reuse"] = round(float(rng.uniform(0.0, 0.95)), 2)
        cfg["output_scale"] = round(out_len / 64, 3)  # the model's outputs (median 69)
        cfg["requests"] = int(rng.integers(800, 1501))
    cfg["options"] = opts
    return cfg


def describe(cfg: dict[str, Any]) -> str:
    if cfg["workload"] == "trace":
        what = (f"trace {cfg['shape']} reuse {cfg['reuse']:g} outputs x{cfg['output_scale']:g}"
                f" {cfg['requests']} req")
    else:
        what = cfg["workload"] + (f"/{cfg['order']}" if "order" in cfg else "") + " " + " ".join(
            f"{k}={v}" for k, v in cfg["options"].items() if k != "mode")
    return f"{what}; {cfg['workers']} workers @{cfg['load']:g}"


def _trace(cfg: dict[str, Any], n: int, path: str) -> None:
    stats = replace(SHAPES[cfg["shape"]], reuse=cfg["reuse"])
    scaled = argparse.Namespace(shared_block=False, grid_ms=0, output_scale=cfg["output_scale"])
    write_mooncake(path, [featured(r, scaled, stats.block_size)
                          for r in synth_records(cfg["requests"], stats, n)])


def run_draw(n: int, args: argparse.Namespace, out: str) -> list[dict[str, Any]]:
    """The compare rows of draw ``n`` (reused if ``out`` holds them already)."""
    cfg = draw(n)
    key = "eviction" if args.eviction else "routing"  # what the rows compare
    evictions = "learned" if args.others and args.eviction else (
        "rlt,learned" if args.eviction else "rlt")
    where = os.path.join(out, f"draw_{n}_seeds_{args.seeds.replace(',', '_')}"
                         + ("_evictions" if args.eviction else ""))
    runs = os.path.join(where, "runs.json")
    others: list[dict[str, Any]] = []
    if args.others:
        try:
            with open(os.path.join(args.others, os.path.basename(where), "runs.json"),
                      encoding="utf-8") as f:
                others = [r for r in json.load(f)["rows"] if r[key] != "learned"]
        except (OSError, ValueError, KeyError) as e:
            sys.exit(f"--others: no earlier run of draw {n} in {args.others} ({e})")
    if not os.path.exists(runs):
        os.makedirs(where, exist_ok=True)
        wl = cfg["workload"]
        cmd = [sys.executable, "-m", "kvroute", "compare", "--evictions", evictions,
               "--routings", "learned" if args.others or args.eviction else args.routings,
               "--loads", str(cfg["load"]), "--workers", str(cfg["workers"]),
               "--seeds", args.seeds,
               "--no-ceilings", "--no-plot", "--jobs", str(args.jobs), "--out", where]
        if wl == "trace":
            trace = os.path.join(where, "trace.jsonl")
            _trace(cfg, n, trace)
            cmd += ["--workloads", "mooncake", "--trace", trace]
        else:
            cmd += ["--workloads", wl]
            if "order" in cfg:
                cmd += ["--orders", cfg["order"]]
            for k, v in cfg["options"].items():
                cmd += ["-o", f"{wl}.{k}={json.dumps(v, separators=(',', ':'))}"]
        for a in args.policy_arg:
            cmd += ["--eviction-arg" if args.eviction else "--policy-arg", f"learned.{a}"]
        done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True, check=False)
        if done.returncode:
            sys.exit(f"draw {n} ({describe(cfg)}): "
                     + (done.stderr.strip() or f"kvroute compare exited {done.returncode}"))
    with open(runs, encoding="utf-8") as f:
        rows: list[dict[str, Any]] = json.load(f)["rows"]
    if args.others:
        rows = [r for r in rows if r[key] == "learned"]
    return rows + others


def _draws(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out += list(range(int(lo), int(hi or lo) + 1))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--draws", default="1-30", help="e.g. 1-30 (design) or 31-60 (check)")
    ap.add_argument("--seeds", default="1,2", help="seeds of each draw (means over them)")
    ap.add_argument("--routings", default=ROUTINGS, help="must include learned")
    ap.add_argument("--eviction", action="store_true",
                    help="learned eviction against rlt instead, both under learned routing")
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--out", help="keep the runs here (and reuse those already there)")
    ap.add_argument("--others", metavar="DIR",
                    help="run only learned; the other policies' rows from this earlier --out")
    ap.add_argument("--policy-arg", action="append", default=[], metavar="KEY=VALUE",
                    help="a parameter of learned (repeat for more; with --eviction, of "
                         "learned eviction)")
    args = ap.parse_args()
    try:
        draws = _draws(args.draws)
    except ValueError:
        ap.error(f"--draws {args.draws}: numbers and ranges, e.g. 1-30,41")
    if not all(s.strip().isdigit() for s in args.seeds.split(",")):
        ap.error(f"--seeds {args.seeds}: numbers, e.g. 1,2")
    if not draws or min(draws) < 1:
        ap.error(f"--draws {args.draws}: no draw (draws are numbered from 1)")
    if not args.eviction and "learned" not in args.routings.split(","):
        sys.exit("--routings must include learned")
    key = "eviction" if args.eviction else "routing"
    console = Console(width=200)
    title = ("learned eviction against rlt, both under learned routing" if args.eviction else
             "learned against the best other policy")
    table = Table(title=f"{title}, draws {args.draws}, seeds {args.seeds} (best other / "
                        "learned: above 1 learned is ahead)")
    for col in ("draw", "workload; cluster @ load", "E2E s", "x E2E", "x TTFT", "x p99",
                *(("hit rate rlt", "learned") if args.eviction else ("best other", "rank"))):
        table.add_column(col, justify="left" if col.startswith("work") else "right")
    logs: dict[str, list[float]] = {m: [] for m in METRICS}
    with tempfile.TemporaryDirectory() as tmp:
        for n in draws:
            cfg = draw(n)
            console.print(f"draw {n}: {describe(cfg)} ...")
            rows = {r[key]: r for r in run_draw(n, args, args.out or tmp)}
            mine = rows["learned"]
            others = {k: v for k, v in rows.items() if k not in ("learned", "oracle")}
            adv = {m: min(v[m] for v in others.values()) / mine[m] for m in METRICS}
            for m in METRICS:
                logs[m].append(math.log(adv[m]))
            best = min(others, key=lambda k: others[k]["e2e_mean"])
            rank = sorted(rows, key=lambda k: rows[k]["e2e_mean"]).index("learned") + 1
            last = ((f"{rows['rlt']['hit_rate']:.3f}", f"{mine['hit_rate']:.3f}")
                    if args.eviction else (best, f"{rank} of {len(rows)}"))
            table.add_row(str(n), describe(cfg), f"{mine['e2e_mean']:.3f}",
                          *(f"{adv[m]:.3f}x" for m in METRICS), *last)
    console.print(table)
    geo = {m: math.exp(sum(v) / len(v)) for m, v in logs.items()}
    console.print(
        f"geometric mean over {len(logs['e2e_mean'])} draws: E2E {geo['e2e_mean']:.3f}x, "
        f"TTFT {geo['ttft_mean']:.3f}x, p99 TTFT {geo['ttft_p99']:.3f}x; within 2% of the "
        f"best mean E2E (or ahead) in {sum(x >= math.log(0.98) for x in logs['e2e_mean'])}, "
        f"of its mean TTFT in {sum(x >= math.log(0.98) for x in logs['ttft_mean'])}; worst "
        f"E2E {math.exp(min(logs['e2e_mean'])):.3f}x, TTFT "
        f"{math.exp(min(logs['ttft_mean'])):.3f}x")


if __name__ == "__main__":
    main()
