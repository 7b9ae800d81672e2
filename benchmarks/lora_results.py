"""The LoRA table of docs/routing-results.md ("LoRA adapters"): `learned` against eight
other policies where engines cap the adapters running at once.

    PYTHONPATH=src python benchmarks/lora_results.py [--traces 1,2,3] [--cases 8/2,16/4,64/8]
        [--grid] [--src OTHER/src] [--cache DIR]

Per case (``N/M``: N adapters, engines running at most M at once) and set of invented
Bailian-format chat traces (``benchmarks/chat_trace.py -n 600 --seed S``, loads 0.5 and
0.8, eviction ``rlt``, 4 workers), one row: `learned`'s geometric-mean advantage over the
best other policy of each cell (mean E2E / mean TTFT / p99 TTFT), the cells where it has
the lowest mean E2E, the same over the adapter-blind policies (all but `llmd_lora`), and
`llmd_lora`'s mean E2E over the best adapter-blind policy. ``--grid`` adds GSP, ShareGPT and
LooGLE with 16 adapters and 4 slots (seeds 1-3 with traces 1-3, else 4-6).

Each cell is a ``kvroute compare`` run (about a minute for the others, a few seconds for
`learned`), kept under ``--cache`` (default: a folder in the system's temporary folder)
by its arguments and a digest of the Python sources it ran, so a second call with
another ``--src`` (a copy of the sources with a variant of `learned`) reruns only
`learned`, and a change to this checkout's sources (the simulator, another policy) reruns
everything.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
OTHERS = "llmd_lora,cache_aware_v2,llmd,dynamo,lmetric,least_load,prefix_hash,round_robin"
METRICS = ("e2e_mean", "ttft_mean", "ttft_p99")


def geo(values: list[float]) -> float:
    return math.exp(sum(map(math.log, values)) / len(values))


def source_digest(src: str) -> str:
    """A digest of the Python sources under ``src``: a cached run is reused only for the
    code that made it."""
    h = hashlib.sha1()
    for root, dirs, files in os.walk(src):
        dirs.sort()
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(root, name)
                h.update(os.path.relpath(path, src).encode())
                with open(path, "rb") as f:
                    h.update(f.read())
    return h.hexdigest()


def compare(src: str, routings: str, args: list[str], cache: str) -> list[dict]:
    """The rows of one ``kvroute compare`` run, from the cache when it holds them."""
    key = hashlib.sha1(json.dumps([source_digest(src), routings, args]).encode()).hexdigest()
    out = os.path.join(cache, key[:16])
    if not os.path.exists(os.path.join(out, "runs.json")):
        env = dict(os.environ, PYTHONPATH=src)
        cmd = [sys.executable, "-m", "kvroute", "compare", *args, "--evictions", "rlt",
               "--routings", routings, "--no-ceilings", "--jobs", "2", "--out", out]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"kvroute compare failed:\n{done.stderr[-2000:]}")
    with open(os.path.join(out, "runs.json")) as f:
        return json.load(f)["rows"]


def trace(seed: int, cache: str) -> str:
    path = os.path.join(cache, f"chat{seed}.jsonl")
    if not os.path.exists(path):
        subprocess.run([sys.executable, os.path.join(HERE, "chat_trace.py"), "--out", path,
                        "--seed", str(seed), "-n", "600"], check=True, capture_output=True)
    return path


def row(name: str, runs: list[tuple[list[dict], list[dict]]]) -> str:
    """``runs``: (learned's rows, the others' rows) per compare run."""
    ratios: dict[str, list[float]] = {m: [] for m in METRICS}
    blind: dict[str, list[float]] = {m: [] for m in METRICS}
    lora_over_blind: list[float] = []
    first = cells = 0
    for mine, others in runs:
        for r in mine:
            same = [o for o in others if (o["workload"], o["order"], o["load"])
                    == (r["workload"], r["order"], r["load"])]
            adapter_blind = [o for o in same if o["routing"] != "llmd_lora"]
            for m in METRICS:
                ratios[m].append(min(o[m] for o in same) / r[m])
                blind[m].append(min(o[m] for o in adapter_blind) / r[m])
            lora = [o["e2e_mean"] for o in same if o["routing"] == "llmd_lora"]
            lora_over_blind.append(min(o["e2e_mean"] for o in adapter_blind) / lora[0])
            cells += 1
            first += r["e2e_mean"] <= min(o["e2e_mean"] for o in same)
    return (f"| {name} | " + " / ".join(f"{geo(ratios[m]):.3f}x" for m in METRICS)
            + f" | {first} of {cells} | " + " / ".join(f"{geo(blind[m]):.3g}x" for m in METRICS)
            + f" | {geo(lora_over_blind):.3f}x |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--traces", default="1,2,3", help="chat trace seeds (default 1,2,3)")
    ap.add_argument("--cases", default="8/2,16/4,64/8",
                    help="ADAPTERS/SLOTS, comma-separated (default 8/2,16/4,64/8)")
    ap.add_argument("--grid", action="store_true",
                    help="also GSP, ShareGPT and LooGLE at 16/4")
    ap.add_argument("--src", default=os.path.join(HERE, "..", "src"),
                    help="the source `learned` runs from (default: this checkout's)")
    ap.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "kvroute-lora"),
                    help="where runs and traces are kept between calls")
    args = ap.parse_args()
    try:
        seeds = [int(s) for s in args.traces.split(",")]
        cases = [tuple(int(x) for x in c.split("/")) for c in args.cases.split(",")]
    except ValueError:
        ap.error("--traces takes seeds like 1,2,3 and --cases ADAPTERS/SLOTS like 8/2,16/4")
    if any(len(c) != 2 or c[0] < 1 or c[1] < 1 for c in cases):
        ap.error("--cases takes ADAPTERS/SLOTS, both >= 1, like 8/2,16/4")
    os.makedirs(args.cache, exist_ok=True)
    here = os.path.join(HERE, "..", "src")
    label = f"traces {args.traces}"
    print("| adapters / slots | `learned` over the best other (E2E / TTFT / p99 TTFT) "
          "| first on E2E | over the blind ones | `llmd_lora` over the blind ones |")
    print("|---|---|---|---|---|")
    for n, m in cases:
        runs = []
        for s in seeds:
            cmd = ["--workloads", "mooncake", "--trace", trace(s, args.cache), "--loads",
                   "0.5,0.8", "--seeds", "1", "--adapters", str(n), "--max-loras", str(m)]
            runs.append((compare(args.src, "learned", cmd, args.cache),
                         compare(here, OTHERS, cmd, args.cache)))
            print(f"  {n}/{m} trace {s} done", file=sys.stderr, flush=True)
        print(row(f"chat {n} / {m}, {label}", runs), flush=True)
    if args.grid:
        grid_seeds = "1,2,3" if seeds == [1, 2, 3] else "4,5,6"
        cmd = ["--workloads", "gsp,sharegpt,loogle", "--orders", "random", "--loads",
               "0.5,0.8", "--seeds", grid_seeds, "--adapters", "16", "--max-loras", "4"]
        print(row(f"GSP, ShareGPT, LooGLE 16 / 4, seeds {grid_seeds}",
                  [(compare(args.src, "learned", cmd, args.cache),
                    compare(here, OTHERS, cmd, args.cache))]), flush=True)


if __name__ == "__main__":
    main()
