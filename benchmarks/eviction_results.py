"""Generate docs/eviction-results.md: one-cache hit rates of every eviction policy beside
the ceilings, and the status of issue 13's targets for ``learned``.

    PYTHONPATH=src python benchmarks/eviction_results.py \
        --trace ../shared/traces/mooncake_synthetic_trace.jsonl [--out PATH]

Streams: GSP (paper defaults, random order) with 16-token pages at the paper's pool
(200,000 tokens = 12,500 blocks); the Mooncake synthetic trace (one unit per hash id) at
1%, 5%, 10% of its unique blocks (skipped if the trace is absent); the adversarial cycle
at its own capacity. Design seeds 1-3 and check seeds 4-6 are reported apart (a GSP seed
changes the stream and the policies' seeds; the trace is fixed, so there a seed changes
only the randomised policies). Numbers are means over the three seeds of each set. The
trace's cells are replayed again at capacities a few blocks either side
(``capacity_spread``, about a minute): how far learned / max(lru, rlt) moves with the
capacity alone. The file is written by this script, not by hand.

The cluster part (skipped with ``--no-cluster``; about 5 minutes on one core) runs
``kvroute compare``: lru, block_lru, rlt and learned eviction under the learned and
cache_aware_v2 routers at offered loads 0.8 and 0.95 (Mooncake: the trace's first 1,500
requests), and ShareGPT's closed loop at its default rate, with a verdict per cell
against issue 13's cluster target (``cluster_verdict``); then the Mooncake cells again
with the window's start moved by up to 50 requests (``mooncake_spread``), which shows
how far their learned / rlt ratio moves when the policies do not change; then session
traffic, the invented conversation and agentic trace shapes, six traces per seed set,
the same way (``sessions``; about 10 minutes more).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import tempfile
import time
from typing import Any

from kvroute.cache.ceilings import replay
from kvroute.cache.eviction import make_policy
from kvroute.cache.radix import RadixCache
from kvroute.cache.replay_grid import replay_grid
from kvroute.workloads.cache_streams import parse_capacities, trace_stream, workload_stream

POLICIES = ["lru", "block_lru", "lfu", "slru", "sae", "rlt", "rlt_faithful", "learned"]
BASELINES = ["lfu", "slru", "sae"]
SEEDS = {"design": [1, 2, 3], "check": [4, 5, 6]}
TRACE = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "traces",
                     "mooncake_synthetic_trace.jsonl")


def cells(trace: str | None) -> list[dict[str, Any]]:
    """Each cell: a stream and capacity, with per-seed-set mean hit rates and times."""
    out = []
    specs: list[tuple[str, Any, list[str], int]] = [("GSP, 16-token pages", "gsp", ["200000"], 16)]
    if trace and os.path.exists(trace):
        specs.append(("Mooncake trace, blocks", "trace", ["1%", "5%", "10%"], 1))
    specs.append(("adversarial cycle (17 paths, cache of 16)", "adversarial", [""], 1))
    for label, kind, caps, page in specs:
        for cap_text in caps:
            cell: dict[str, Any] = {"stream": label, "capacity_text": cap_text, "sets": {}}
            for set_name, seeds in SEEDS.items():
                rates: dict[str, list[float]] = {p: [] for p in [*POLICIES, "optimal", "infinite"]}
                times: dict[str, list[float]] = {p: [] for p in POLICIES}
                for seed in seeds:
                    if kind == "trace":
                        stream = trace_stream(trace, "block")  # type: ignore[arg-type]
                    else:
                        stream = workload_stream(kind, seed)
                    cap = (stream.capacity if kind == "adversarial" else
                           parse_capacities(cap_text, stream.unique_units)[0])
                    assert cap is not None
                    (g,) = replay_grid(stream.prompts, [cap], POLICIES, seed=seed,
                                       page_size=page)
                    cell["capacity"] = cap
                    for row in g["policies"]:
                        rates[row["policy"]].append(row["hit_rate"])
                        times[row["policy"]].append(row["seconds"])
                    rates["optimal"].append(g["ceilings"]["optimal"])
                    rates["infinite"].append(g["ceilings"]["infinite"])
                cell["sets"][set_name] = {
                    "rates": {k: statistics.mean(v) for k, v in rates.items()},
                    "all": rates,
                    "time_ratio": sum(times["learned"]) / sum(times["rlt"])}
            out.append(cell)
    return out


CAPACITY_SHIFTS = range(-10, 11, 2)  # blocks: the trace cells' capacities moved by these
FLOOR = 0.98  # issue 13: learned never below this times max(lru, rlt)


def capacity_spread(trace: str) -> list[str]:
    """The trace's one-cache cells again at capacities a few blocks either side (well
    under 1% of each): how far learned / max(lru, rlt) moves when nothing but the
    capacity does."""
    stream = trace_stream(trace, "block")
    lines = ["## The trace's one-cache cells: how much is noise", "",
             f"The Mooncake cells at their capacity moved by {CAPACITY_SHIFTS[0]} to "
             f"+{CAPACITY_SHIFTS[-1]} blocks in steps of {CAPACITY_SHIFTS.step} "
             f"({len(CAPACITY_SHIFTS)} capacities; seeds as above, lru has none): learned "
             "/ max(lru, rlt) at each, and how many are under issue 13's floor of "
             f"{FLOOR}x. A cell in the tables above is one of these draws.", "",
             "| capacity | seeds | mean | lowest | highest | under the floor | at each |",
             "|---|---|---:|---:|---:|---:|---|"]
    for cap_text in ("1%", "5%", "10%"):
        base = parse_capacities(cap_text, stream.unique_units)[0]
        assert base is not None
        for set_name, seeds in SEEDS.items():
            ratios = []
            for shift in CAPACITY_SHIFTS:
                def rate(policy: str, seed: int, cap: int = base + shift) -> float:
                    cache = RadixCache(cap, make_policy(policy, {}, seed=seed))
                    return replay(cache, stream.prompts).hit_rate
                best = max(rate("lru", seeds[0]),
                           statistics.mean(rate("rlt", s) for s in seeds))
                ratios.append(statistics.mean(rate("learned", s) for s in seeds) / best)
            under = sum(r < FLOOR for r in ratios)
            lines.append(f"| {cap_text} ({base:,} ± {CAPACITY_SHIFTS[-1]}) | {set_name} | "
                         f"{statistics.mean(ratios):.3f} | {min(ratios):.3f} | "
                         f"{max(ratios):.3f} | {under} of {len(ratios)} | "
                         + " ".join(f"{r:.3f}" for r in ratios) + " |")
    return lines


def status(cell: dict[str, Any], set_name: str) -> tuple[str, list[str]]:
    """Issue 13's one-cache targets for ``learned`` in one cell (adversarial: >= 0.9x
    RLT; otherwise 1.3x max(lru, rlt) where the optimum is >= 1.5x above them, never
    below 0.98x, at least the best of lfu, slru, sae)."""
    r = cell["sets"][set_name]["rates"]
    learned = r["learned"]
    if cell["stream"].startswith("adversarial"):
        ok = learned >= 0.9 * r["rlt"]
        return ("met" if ok else "**not met**"), [f"{learned / r['rlt']:.2f}x rlt (>= 0.9x)"]
    base = max(r["lru"], r["rlt"])
    best_engine = max(r[b] for b in BASELINES)
    notes, ok = [], True
    if r["optimal"] >= 1.5 * base:
        ok &= learned >= 1.3 * base
        notes.append(f"{learned / base:.2f}x max(lru, rlt) (>= 1.3x)")
    else:
        notes.append(f"{learned / base:.2f}x max(lru, rlt)")
    ok &= learned >= FLOOR * base
    ok &= learned >= best_engine
    notes.append(f"{learned / best_engine:.2f}x best of lfu/slru/sae (>= 1x)")
    notes.append(f"{learned / r['block_lru']:.2f}x block_lru (vLLM's; not in the issue)")
    notes.append(f"{learned / r['optimal']:.0%} of optimum (moonshot 80%)")
    return ("met" if ok else "**not met**"), notes


def reuse_distances(trace: str, all_cells: list[dict[str, Any]]) -> list[str]:
    """Why the trace is hard for any online policy: how far back (in requests) each
    infinite-cache block hit last saw its block, against how many requests a cache of
    1%, 5%, 10% holds (unique blocks per request, on average); with learned's range over
    max(lru, rlt) on the trace's cells."""
    ratios = [r["learned"] / max(r["lru"], r["rlt"]) for c in all_cells
              if c["stream"].startswith("Mooncake") for r in
              (s["rates"] for s in c["sets"].values())]
    stream = trace_stream(trace, "block")
    last: dict[int, int] = {}
    gaps = []
    for j, prompt in enumerate(stream.prompts):
        h = 0
        for x in prompt.tolist():
            h = hash((h, x))
            if h in last:
                gaps.append(j - last[h])
            last[h] = j
    gaps.sort()
    per_request = stream.unique_units / len(stream.prompts)
    out = [f"- Mooncake trace: {len(gaps):,} block hits with an infinite cache; median "
           f"distance to the block's previous use {gaps[len(gaps) // 2]} requests "
           f"(quartiles {gaps[len(gaps) // 4]}, {gaps[3 * len(gaps) // 4]})."]
    for pct in (1, 5, 10):
        fit = stream.unique_units * pct / 100 / per_request
        beyond = sum(1 for g in gaps if g > fit) / len(gaps)
        out.append(f"  - a {pct}% cache holds about {fit:.0f} requests' new blocks; "
                   f"{beyond:.0%} of the hits come from further back than that.")
    out.append("  So a policy must choose which once-seen blocks to keep for hundreds of "
               "requests. The optimum knows; in our measurements the features an online "
               "policy sees (hits, age, depth, place in the leaf) separate them weakly, and "
               "`learned` stays within a few percent of lru and rlt there "
               f"({min(ratios):.2f}-{max(ratios):.2f}x max(lru, rlt) in the cells above). "
               "`benchmarks/mooncake_reuse.py` measures why: most prefix groups are seen "
               "once, popularity moves (the first half's most used blocks are a poor guess "
               "for the second half's), and frequency with perfect per-block memory gains "
               "at most 1.24x at one capacity and loses at the others; ordered by each "
               "block's true number of uses over the whole trace (future knowledge), it "
               "reaches only 1.69x / 1.41x / 1.35x at 1% / 5% / 10% (docs/cache.md).")
    return out


def render(all_cells: list[dict[str, Any]], elapsed: float,
           notes: list[str] | None = None, spread: list[str] | None = None) -> str:
    lines = ["# Eviction results (issue 13)", "",
             "Generated by `PYTHONPATH=src python benchmarks/eviction_results.py --trace "
             "../shared/traces/mooncake_synthetic_trace.jsonl`; do not edit by hand. "
             "One cache, requests served one at a time (clock = request index), hit rate "
             "= hit units / prompt units. Means over seeds 1-3 (design) "
             "and 4-6 (check), reported apart. Ceilings: `infinite` (never evict), "
             "`optimal` (offline tree Belady at the same capacity).", ""]
    cols = [*POLICIES, "optimal", "infinite"]
    for set_name in SEEDS:
        lines += [f"## Hit rates, {set_name} seeds {SEEDS[set_name]}", "",
                  "| stream | capacity | " + " | ".join(cols) + " | learned targets |",
                  "|---|---|" + "---|" * len(cols) + "---|"]
        for cell in all_cells:
            r = cell["sets"][set_name]["rates"]
            best = max(r[p] for p in POLICIES)
            vals = [(f"**{r[p]:.4f}**" if p in POLICIES and r[p] == best else f"{r[p]:.4f}")
                    for p in cols]
            cap = cell["capacity_text"] or "built-in"
            st, _ = status(cell, set_name)
            lines.append(f"| {cell['stream']} | {cap} ({cell['capacity']:,}) | "
                         + " | ".join(vals) + f" | {st} |")
        lines.append("")
    lines += ["## Targets, cell by cell", ""]
    for cell in all_cells:
        for set_name in SEEDS:
            st, cell_notes = status(cell, set_name)
            cap = cell["capacity_text"] or "built-in"
            lines.append(f"- {cell['stream']} at {cap}, {set_name}: {st}: "
                         + "; ".join(cell_notes))
    lines += ["", "## Replay time", ""]
    for cell in all_cells:
        ratios = ", ".join(f"{s} {cell['sets'][s]['time_ratio']:.2f}x" for s in SEEDS)
        lines.append(f"- {cell['stream']} at {cell['capacity_text'] or 'built-in'}: "
                     f"learned / rlt replay time {ratios} (target <= 2x; these are single "
                     "runs on a shared machine: `benchmarks/cache_bench.py` measures it "
                     "with interleaved repeats)")
    lines += ["", "## Notes", "",
              "- lfu and slru give identical rows on these streams: asked for the whole "
              "allocation, they always find enough never-hit leaves, and they differ only "
              "in the order of leaves that have hits (tests/cache/test_baselines.py). Both "
              "then keep hit leaves for good, which costs them on the trace.",
              "- block_lru (vLLM's GPU prefix cache: LRU by pages, tail first, exactly "
              "the deficit) is not among the issue's baselines, which predate it here; "
              "the targets above leave it out, and each cell's notes give learned / "
              "block_lru.",
              "- sae: vLLM's constants with time = the request index and depth in pages "
              "(our reading of anchors.md); with 16-token pages (GSP) its depth bonus is "
              "what vLLM's would be.",
              *(notes or [])]
    if spread:
        lines += ["", *spread]
    lines += ["", f"One-cache part of the script: {elapsed:.0f} s.", ""]
    return "\n".join(lines)


CLUSTER_LOADS = "0.8,0.95"
CLUSTER_ROUTINGS = "learned,cache_aware_v2"
CLUSTER_EVICTIONS = "lru,block_lru,rlt,learned"
MOONCAKE_LIMIT = 1500
SHIFTS = (0, 10, 20, 30, 40, 50)  # requests: where the Mooncake windows of the spread start
AT_OPTIMUM = 0.99  # a hit rate within 1% of the pooled optimum leaves nothing to win


def _compare(args: list[str]) -> list[dict[str, Any]]:
    """The rows (means over the seeds) of one ``kvroute compare`` run."""
    import json

    from kvroute.cli import main as cli

    with tempfile.TemporaryDirectory() as out:
        with contextlib.redirect_stdout(io.StringIO()):
            cli([*args, "--jobs", "1", "--out", out, "--no-plot"])
        with open(os.path.join(out, "runs.json")) as fh:
            rows: list[dict[str, Any]] = json.load(fh)["rows"]
    return rows


def cluster_verdict(by_ev: dict[str, dict[str, Any]]) -> tuple[bool | None, str]:
    """Issue 13's cluster target in one cell (a workload, load and routing): learned's
    mean TTFT is no worse than rlt's, and better where rlt's hit rate is below
    ``AT_OPTIMUM`` x the pooled optimum. None where every eviction gives the same hit
    rate and TTFT (nothing evicted, or no choice mattered): eviction cannot win there."""
    learned, rlt = by_ev["learned"], by_ev["rlt"]
    if len({(r["hit_rate"], r["ttft_mean"]) for r in by_ev.values()}) == 1:
        return None, "1 (rows equal)"
    below = rlt["hit_rate"] < AT_OPTIMUM * rlt["ceiling_optimal"]
    ratio = learned["ttft_mean"] / rlt["ttft_mean"]
    ok = ratio < 1.0 if below else ratio <= 1.0
    need = "< 1 (below the optimum)" if below else "<= 1 (at the optimum)"
    return ok, f"{ratio:.3f} {need}"


def cluster_table(rows: list[dict[str, Any]]) -> tuple[list[str], int, int, int]:
    """One line per (workload, load, routing): hit rates and mean TTFT of each eviction,
    the pooled optimum, learned / rlt TTFT and the verdict; and (met, cells judged,
    cells with equal rows)."""
    evs = CLUSTER_EVICTIONS.split(",")
    cells: dict[tuple[str, str, Any, str], dict[str, dict[str, Any]]] = {}
    for r in rows:
        key = (r["workload"], r.get("order") or "", r["load"], r["routing"])
        cells.setdefault(key, {})[r["eviction"]] = r
    lines = ["| workload | load | routing | hit " + " / ".join(evs) + " | optimum | TTFT s "
             + " / ".join(evs) + " | learned / rlt TTFT | target |",
             "|---|---:|---|---|---:|---|---|---|"]
    met = equal = 0
    for (wl, order, load, ro), by_ev in sorted(cells.items(), key=lambda kv: (
            kv[0][0], kv[0][1], kv[0][2] if kv[0][2] is not None else -1.0, kv[0][3])):
        ok, note = cluster_verdict(by_ev)
        met += bool(ok)
        equal += ok is None
        verdict = "equal rows" if ok is None else "met" if ok else "**not met**"
        name = f"{wl} {order}".strip()
        hits = " / ".join(f"{by_ev[e]['hit_rate']:.3f}" for e in evs)
        ttft = " / ".join(f"{by_ev[e]['ttft_mean']:.3f}" for e in evs)
        opt = by_ev["rlt"]["ceiling_optimal"]
        lines.append(f"| {name} | {'-' if load is None else load} | {ro} | {hits} | "
                     f"{opt:.3f} | {ttft} | {note} | {verdict} |")
    return lines, met, len(cells) - equal, equal


def cluster(trace: str | None) -> str:
    """``kvroute compare`` (the simulator: 4 workers, the default profile): lru, block_lru,
    rlt and learned eviction under the best routers (learned, cache_aware_v2) at offered loads
    0.8 and 0.95, means over each seed set; then ShareGPT's closed loop at its default
    rate (overloaded), where learned used to lose hits."""
    have_trace = bool(trace and os.path.exists(trace))
    workloads = "gsp,sharegpt,loogle" + (",mooncake" if have_trace else "")
    common = ["--evictions", CLUSTER_EVICTIONS, "--routings", CLUSTER_ROUTINGS]
    loaded = ["compare", "--workloads", workloads, "--orders", "random", *common,
              "--loads", CLUSTER_LOADS]
    if have_trace:
        loaded += ["--trace", str(trace), "-o", f"mooncake.limit={MOONCAKE_LIMIT}"]
    closed = ["compare", "--workloads", "sharegpt", "--evictions", CLUSTER_EVICTIONS,
              "--routings", "lbgr," + CLUSTER_ROUTINGS]
    lines = ["## In the cluster (`kvroute compare`, 4 simulated workers)", "",
             "Target (issue 13): with the best router, learned eviction's mean TTFT no "
             "worse than rlt's in any cell, and better where the hit rate is below the "
             f"pooled optimum (here: rlt's hit rate below {AT_OPTIMUM} x the optimum; at "
             "the optimum every eviction gives the same rows). Routers: `learned` (the "
             "default and best, docs/routing-results.md) and `cache_aware_v2` (the "
             "strongest affinity baseline). Optimum: the pooled offline optimum. TTFT in "
             "seconds. Each table is the mean over its three seeds. Command, per seed set "
             f"S: `kvroute compare --workloads {workloads} --orders random --evictions "
             f"{CLUSTER_EVICTIONS} --routings {CLUSTER_ROUTINGS} --loads {CLUSTER_LOADS} "
             "--seeds S --jobs 1"
             + (f" --trace TRACE -o mooncake.limit={MOONCAKE_LIMIT}`. Scaled down: the "
                f"Mooncake cells replay the trace's first {MOONCAKE_LIMIT:,} requests "
                "(of 3,993), to keep the script's run short." if have_trace else "`."),
             "", "At these loads ShareGPT runs its open loop and LooGLE fits: lru, rlt "
             "and learned give the same rows (\"equal rows\": nothing for eviction to win; "
             "their gap to the optimum is routing's), and they are not counted.", ""]
    closed_lines = []
    for set_name, seeds in SEEDS.items():
        seed_text = ",".join(map(str, seeds))
        table, met, n, equal = cluster_table(_compare([*loaded, "--seeds", seed_text]))
        lines += [f"### Loads {CLUSTER_LOADS}, {set_name} seeds {seed_text}: target met "
                  f"in {met} of {n} cells ({equal} more with equal rows)", "", *table, ""]
        table, met, n, equal = cluster_table(_compare([*closed, "--seeds", seed_text]))
        closed_lines += [f"### ShareGPT closed loop, {set_name} seeds {seed_text}: target "
                         f"met in {met} of {n} cells", "", *table, ""]
    if have_trace:
        lines.append(mooncake_spread(str(trace)))
    lines += ["## ShareGPT's closed loop in the cluster", "",
              "The workload's default (128 clients, each sending its session's turns one "
              "after another; about 2.5-4 s of TTFT: overloaded, no `--load`), where the "
              "earlier lbgr rows had learned below rlt. Command, per seed set S: "
              "`kvroute compare --workloads sharegpt --evictions "
              f"{CLUSTER_EVICTIONS} --routings lbgr,{CLUSTER_ROUTINGS} --seeds S "
              "--jobs 1`.", "", *closed_lines]
    return "\n".join(lines)


SESSION_SHAPES = ("conversation", "agentic")
SESSION_REQUESTS = 2000
# six traces a set: one trace's mean TTFT in a cell moves by up to 1.6x with the trace
# (docs/cache.md), and three per set gave verdicts that twelve did not confirm
SESSION_SEEDS = {"design": [1, 2, 3, 4, 5, 6], "check": [7, 8, 9, 10, 11, 12]}


def mean_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows of the same (workload, load, routing, eviction) averaged (hit rate, mean
    TTFT, pooled optimum)."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["workload"], r["load"], r["routing"], r["eviction"]), []).append(r)
    return [{**same[0], **{k: statistics.fmean(r[k] for r in same)
                           for k in ("hit_rate", "ttft_mean", "ceiling_optimal")}}
            for same in groups.values()]


def sessions() -> str:
    """Session traffic in the cluster: the invented conversation and agentic trace shapes
    (``mooncake_synth.SHAPES``, one trace per seed, as ``make_trace.py -n 2000 --shape S
    --seed N`` writes it), lru, block_lru, rlt and learned eviction under the best
    routers."""
    from kvroute.workloads.mooncake import write_mooncake
    from kvroute.workloads.mooncake_synth import SHAPES, synth_records

    lines = ["## Session traffic in the cluster", "",
             "Not on the issue's grid: sessions that continue turn by turn, where "
             "recency is most of what there is to know. The invented conversation and "
             f"agentic shapes, {SESSION_REQUESTS:,}-request traces, one per seed "
             f"(`python benchmarks/make_trace.py -n {SESSION_REQUESTS} --shape S --seed N`"
             "), each replayed by `kvroute compare --workloads mooncake --trace T "
             f"--evictions {CLUSTER_EVICTIONS} --routings {CLUSTER_ROUTINGS} --loads "
             f"{CLUSTER_LOADS} --seeds 1`; each table is the mean over its six traces "
             "(per-trace ratios and what was tried: docs/cache.md, \"`learned` on session "
             "traffic in the cluster\").", ""]
    for set_name, seeds in SESSION_SEEDS.items():
        rows = []
        for shape in SESSION_SHAPES:
            for seed in seeds:
                with tempfile.TemporaryDirectory() as tmp:
                    path = os.path.join(tmp, f"{shape}_{seed}.jsonl")
                    write_mooncake(path, synth_records(SESSION_REQUESTS, SHAPES[shape], seed))
                    rows += [{**r, "workload": shape} for r in _compare([
                        "compare", "--workloads", "mooncake", "--trace", path,
                        "--evictions", CLUSTER_EVICTIONS, "--routings", CLUSTER_ROUTINGS,
                        "--loads", CLUSTER_LOADS, "--seeds", "1"])]
        table, met, n, equal = cluster_table(mean_rows(rows))
        seed_text = ",".join(map(str, seeds))
        lines += [f"### Trace seeds {seed_text} ({set_name}): target met in {met} of {n} "
                  f"cells ({equal} more with equal rows)", "", *table, ""]
    return "\n".join(lines)


def spread_table(rows_by_shift: dict[int, list[dict[str, Any]]]
                 ) -> tuple[list[str], list[float]]:
    """One line per (routing, load): learned / rlt and lru / rlt mean TTFT over the
    windows (geometric mean, lowest and highest, each window's learned / rlt); and every
    window's learned / rlt, all cells together."""
    ttft: dict[tuple[str, Any], dict[int, dict[str, float]]] = {}
    for shift, rows in rows_by_shift.items():
        for r in rows:
            ttft.setdefault((r["routing"], r["load"]), {}).setdefault(
                shift, {})[r["eviction"]] = r["ttft_mean"]
    lines = ["| routing | load | learned / rlt TTFT: geo-mean (lowest, highest) | "
             "lru / rlt TTFT | learned / rlt by window start |", "|---|---:|---|---|---|"]
    every: list[float] = []

    def summary(ratios: list[float]) -> str:
        return (f"{statistics.geometric_mean(ratios):.3f} "
                f"({min(ratios):.3f}, {max(ratios):.3f})")

    for (ro, load), by_shift in sorted(ttft.items()):
        starts = sorted(by_shift)
        learned, lru = ([by_shift[s][ev] / by_shift[s]["rlt"] for s in starts]
                        for ev in ("learned", "lru"))
        every += learned
        each = ", ".join(f"{s}: {x:.3f}" for s, x in zip(starts, learned, strict=True))
        lines.append(f"| {ro} | {load} | {summary(learned)} | {summary(lru)} | {each} |")
    return lines, every


def mooncake_spread(trace: str) -> str:
    """The Mooncake cells again, seed 1, with the window's start moved by a few requests:
    how far learned / rlt moves when nothing about the policies changes."""
    rows = {shift: _compare(["compare", "--workloads", "mooncake", "--evictions",
                             CLUSTER_EVICTIONS, "--routings", CLUSTER_ROUTINGS, "--loads",
                             CLUSTER_LOADS, "--trace", trace, "-o",
                             f"mooncake.limit={MOONCAKE_LIMIT}", "-o",
                             f"mooncake.start={shift}", "--seeds", "1"])
            for shift in SHIFTS}
    table, every = spread_table(rows)
    hits = [r["hit_rate"] for window in rows.values() for r in window]
    starts = ", ".join(map(str, SHIFTS))
    return "\n".join([
        "## The Mooncake cells: how much is noise", "",
        f"The same cells, seed 1, with the replayed window's first request moved by 0 to "
        f"{SHIFTS[-1]} requests (`-o mooncake.start=N`, N = {starts}; still "
        f"{MOONCAKE_LIMIT:,} requests): the policies and their parameters do not change, "
        f"the workload hardly does (any two windows share at least "
        f"{1 - SHIFTS[-1] / MOONCAKE_LIMIT:.0%} of their requests). "
        f"Across these windows learned / rlt mean TTFT ranges from {min(every):.3f} to "
        f"{max(every):.3f}. Few requests hit (hit rates {min(hits):.3f}-{max(hits):.3f}), "
        "and at these loads which of them hit, and when, moves every later "
        "request's queue: a single window's ratio, as in the tables above, is one draw "
        "from this range, and three seeds do not narrow it (the trace is fixed; a seed "
        "changes only the randomised policies' draws).", "", *table, ""])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trace", default=TRACE, help="the Mooncake synthetic trace")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "docs",
                                                  "eviction-results.md"))
    ap.add_argument("--no-cluster", action="store_true", help="skip the simulator rows")
    args = ap.parse_args()
    start = time.perf_counter()
    grid = cells(args.trace)
    have_trace = bool(args.trace and os.path.exists(args.trace))
    notes = reuse_distances(args.trace, grid) if have_trace else []
    spread = capacity_spread(args.trace) if have_trace else []
    elapsed = time.perf_counter() - start
    extra = "" if args.no_cluster else cluster(args.trace) + "\n" + sessions()
    text = render(grid, elapsed, notes, spread) + "\n" + extra
    with open(args.out, "w") as fh:
        fh.write(text)
    print(text)


if __name__ == "__main__":
    main()
