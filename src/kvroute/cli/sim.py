"""``kvroute sim``: run a workload through the simulated cluster for each policy pair."""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

from kvroute.cache.eviction.registry import EVICTION
from kvroute.cli.console import check_output, make_console, need_matplotlib, progress_bar
from kvroute.cli.policy_flags import (
    DEFAULT_EVICTION,
    DEFAULT_ROUTING,
    ONLINE,
    SIMULATED,
    add_arg_flags,
    add_engine_flags,
    add_index_flags,
    add_told_flags,
    choose,
    eviction_args,
    routing_args,
    seed,
)
from kvroute.cli.tables import Column, choose_columns, print_table
from kvroute.cli.workload_flags import add_workload_flags, build_workload
from kvroute.errors import ConfigError
from kvroute.routing.registry import ROUTING
from kvroute.sim.cluster import SimConfig, SimResult, check_fits, simulate
from kvroute.sim.load import arrival_line, rate_line
from kvroute.sim.step_model import parse_overrides, parse_speeds
from kvroute.sim.step_profiles import DEFAULT_PROFILE, load_profile, profile_names
from kvroute.workloads.catalog import WORKLOAD_NAMES
from kvroute.workloads.request import OpenLoop

__all__ = ["add_parser", "cmd_sim"]


def _ms(seconds: float) -> str:
    if math.isnan(seconds):
        return "-"
    return f"{seconds * 1000:,.0f}" if seconds < 10 else f"{seconds:,.1f}s"


COLUMNS = (
    Column("eviction", "eviction", names=True, right=False),
    Column("routing", "routing", names=True, right=False),
    Column("index", "index", names=True, right=False),
    Column("hit", "hit", "prefix-cache hit rate (cached / prompt tokens)"),
    Column("of_opt", "of opt", "hit rate / the pooled offline optimum's"),
    Column("ttft", "TTFT", "mean time to first token, ms (s when marked)"),
    Column("ttft_p99", "TTFT p99", "its 99th percentile"),
    Column("e2e", "E2E", "mean end-to-end latency, ms (s when marked)"),
    Column("e2e_p99", "E2E p99", "its 99th percentile"),
    Column("queue", "queue", "mean time from arrival to admission at the worker (any time "
           "held at the router included), ms (s when marked)"),
    Column("rps", "req/s", "requests completed per second of simulated time"),
    Column("tps", "prompt tok/s", "prompt tokens per second"),
    Column("wall", "wall s", "seconds this run took to simulate"),
)


def _rows(results: list[SimResult]) -> list[dict[str, str]]:
    rows = []
    for r in results:
        s = r.summary()
        opt = s.get("ceiling_optimal")
        rows.append({
            "eviction": r.config.eviction, "routing": r.config.routing,
            "index": r.config.index,
            "hit": f"{s['hit_rate']:.4f}", "of_opt": f"{s['hit_rate'] / opt:.1%}" if opt else "-",
            "ttft": _ms(s["ttft_s"]["mean"]), "ttft_p99": _ms(s["ttft_s"]["p99"]),
            "e2e": _ms(s["e2e_s"]["mean"]), "e2e_p99": _ms(s["e2e_s"]["p99"]),
            "queue": _ms(s["queue_s"]["mean"]), "rps": f"{s['throughput_rps']:.2f}",
            "tps": f"{s['prompt_tps']:,.0f}", "wall": f"{s['wall_s']:.1f}"})
    return rows


def cmd_sim(args: argparse.Namespace) -> int:
    """Simulate a cluster of workers behind a router; one run per (eviction, routing,
    index) triple. For an open loop it first prints the offered load: the rate --load
    chose, or, without --load, the load that the workload's own arrival times offer (a
    trace's timestamps are read as milliseconds)."""
    console = make_console()
    columns = choose_columns(COLUMNS, args.columns)
    if args.plot:
        need_matplotlib("--plot")
    check_output(args.json, "--json")
    check_output(args.plot, "--plot", kind="figure")
    evictions = choose(EVICTION, args.eviction, "in the simulator", ONLINE)
    routings = choose(ROUTING, args.routing, "in the simulator", SIMULATED)
    ev_args, ro_args = eviction_args(args, evictions), routing_args(args, routings)
    model = load_profile(args.profile)
    if args.step_coeffs:
        model = model.replace(**parse_overrides(args.step_coeffs))
    base = SimConfig(workers=args.workers, profile=args.profile, model=model,
                     capacity=args.capacity, chunk_size=args.chunk_size,
                     max_running=args.max_running, mixed_chunk=args.mixed_chunk,
                     router_replicas=args.router_replicas, adapters=args.adapters,
                     max_loras=args.max_loras,
                     seed=args.seed, debug=args.debug, event_delay=args.event_delay,
                     block_size=args.event_block_size, speeds=parse_speeds(args.speeds),
                     max_tokens=args.max_tokens,
                     report_cached=args.report_cached, stream_share=args.stream_share)
    indexes = [i.strip() for i in args.index.split(",") if i.strip()]
    for i in indexes or [args.index]:
        if i not in ("approx", "exact"):
            raise ConfigError(f"--index takes approx, exact or both, got {i!r}")
        replace(base, index=i)  # checks the combination before any work
    workload, rate = build_workload(args, model=model, workers=base.speed_sum,
                                    chunk_size=args.chunk_size, pool=args.capacity,
                                    concurrency=args.concurrency)
    if rate is not None:
        console.print(rate_line(args.load, rate))
    elif isinstance(workload, OpenLoop):
        hint = ("the trace's timestamps are read as milliseconds: --time-scale multiplies "
                "the gaps, --load picks the rate" if args.trace else "--load picks the rate")
        console.print(arrival_line(workload, model, base.speed_sum, args.chunk_size,
                                   args.capacity, hint))
    check_fits(workload, args.capacity or model.kv_pool_tokens)
    results: list[SimResult] = []
    runs = [(e, r, i) for e in evictions for r in routings for i in indexes]
    with progress_bar(console) as progress:
        try:
            for k, (ev, ro, ix) in enumerate(runs):
                task = progress.add_task(f"{ev} + {ro} ({ix})", total=workload.size)

                def advance(done: int, task: Any = task) -> None:
                    if done % 64 == 0:
                        progress.update(task, completed=done)

                cfg = replace(base, eviction=ev, routing=ro, eviction_args=ev_args[ev],
                              routing_args=ro_args[ro], index=ix)
                results.append(simulate(workload, cfg, ceilings=args.ceilings and k == 0,
                                        progress=advance))
                progress.update(task, completed=workload.size)
        except KeyboardInterrupt:  # keep the runs that finished
            if not results:
                raise
    if len(results) < len(runs):
        console.print(f"interrupted after {len(results)} of {len(runs)} runs: the finished "
                      "ones follow", style="yellow")
    ceil = results[0].ceilings
    for r in results[1:]:
        r.ceilings = ceil
    size = f"{len(results[0].records):,} requests"
    speeds = f" at speeds {', '.join(f'{v:g}' for v in base.speeds)}" if base.speeds else ""
    title = (f"{workload.name} ({size}) on {args.workers} workers{speeds}, profile {model.name}, "
             f"KV pool {results[0].capacity:,} tokens per worker"
             + ("; no max_tokens sent" if base.max_tokens == "none" else "")
             + (f"; max_tokens {base.max_tokens} sent"
                if base.max_tokens not in ("exact", "none") else "")
             + ("; no cached-token reports" if not base.report_cached else "")
             + (f"; {base.stream_share:.0%} streamed" if base.stream_share < 1 else ""))
    print_table(console, title, columns, _rows(results))
    if ceil is not None:
        console.print(f"ceilings: infinite cache {ceil.infinite:.4f}; offline optimum pooled "
                      f"over {ceil.workers} x {ceil.capacity:,} tokens {ceil.optimal:.4f}. "
                      "Concurrency only lowers real hit rates. Latencies in ms unless marked s.")
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": [r.to_json() for r in results]}))
        console.print(f"wrote {args.json}")
    if args.plot:
        from kvroute.sim.plot import plot_runs

        console.print(f"wrote {plot_runs(results, args.plot, title)}")
    return 0 if len(results) == len(runs) else 130


def add_parser(sub: Any) -> None:
    s = sub.add_parser("sim", help="simulate M workers behind a router (the paper's setup)",
                       description=cmd_sim.__doc__)
    s.add_argument("--workload", choices=WORKLOAD_NAMES,
                   help="what to send (synthetic unless --dataset/--trace; default gsp, "
                        "mooncake with --trace)")
    s.add_argument("--eviction", default=DEFAULT_EVICTION,
                   help="comma-separated eviction policies, from: "
                        f"{', '.join(EVICTION.names(**ONLINE))}")
    s.add_argument("--routing", default=DEFAULT_ROUTING,
                   help=f"comma-separated routing policies, from: {', '.join(ROUTING.names())}")
    add_arg_flags(s)
    add_index_flags(s, both=True)
    add_told_flags(s)
    s.add_argument("--workers", type=int, default=4, help="simulated workers (GPUs)")
    s.add_argument("--profile", default=DEFAULT_PROFILE,
                   help=f"step-time profile name or JSON file; names: "
                        f"{', '.join(profile_names())}")
    s.add_argument("--speeds", metavar="S,...",
                   help="each worker's speed relative to the profile, one per worker, e.g. "
                        "1,1,0.5,0.5 (step times divided by it, same KV pool; --load counts "
                        "their sum)")
    s.add_argument("--step-coeffs", metavar="K=V,...",
                   help="override profile coefficients, e.g. t_w_ms=20,b_ms=0.12")
    s.add_argument("--capacity", type=int, help="KV pool per worker in tokens "
                   "(default: the profile's)")
    add_engine_flags(s)
    s.add_argument("--seed", type=seed, default=1,
                   help="seed of the workload and of every policy")
    s.add_argument("--no-ceilings", dest="ceilings", action="store_false",
                   help="skip the infinite-cache and pooled-optimum ceilings")
    s.add_argument("--json", metavar="PATH", help="write every run (summary, requests, load)")
    s.add_argument("--plot", metavar="PATH", help="write a figure (PNG/SVG/PDF by its "
                   "suffix, .png without one; needs kvroute[plot])")
    s.add_argument("--columns", metavar="A,B,...", help="table columns, from: "
                   f"{', '.join(c.key for c in COLUMNS if not c.names)} (default: all that "
                   "fit the terminal)")
    s.add_argument("--debug", action="store_true",
                   help="check every invariant after every step (slow)")
    w = add_workload_flags(s, "workload options (defaults: the paper's)")
    w.add_argument("--concurrency", type=int, help="chat closed loop: clients in flight")
    s.set_defaults(func=cmd_sim)
