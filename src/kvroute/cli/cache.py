"""``kvroute cache``: replay a prompt stream (a workload or a trace) through one cache per
eviction policy, at one or more capacities, beside the infinite and offline-optimum
ceilings."""

from __future__ import annotations

import argparse
import json
from typing import Any

from kvroute.cache.eviction.registry import EVICTION, policy_names
from kvroute.cache.replay_grid import replay_grid
from kvroute.cli.console import check_output, make_console, progress_bar
from kvroute.cli.policy_flags import add_arg_flags, eviction_args, seed
from kvroute.cli.tables import Column, print_table
from kvroute.errors import ConfigError
from kvroute.workloads.cache_streams import (
    STREAM_WORKLOADS,
    UNITS,
    CacheStream,
    parse_capacities,
    trace_stream,
    workload_stream,
)
from kvroute.workloads.gsp import ORDERS

DEFAULT_POLICIES = ("lru", "block_lru", "lfu", "slru", "sae", "rlt", "rlt_faithful", "learned",
                    "optimal")
DEFAULT_CAPACITY = {"gsp": "200000", "trace": "1%,5%,10%", "sharegpt": "1%,5%,10%",
                    "loogle": "1%,5%,10%"}


def _stream(args: argparse.Namespace) -> CacheStream:
    if args.trace:
        if args.workload:
            raise ConfigError("give --trace or --workload, not both")
        return trace_stream(args.trace, args.unit, args.block_size)
    name = args.workload or "gsp"
    if name == "gsp":
        return workload_stream("gsp", args.seed, groups=args.groups,
                               prompts_per_group=args.prompts_per_group,
                               prefix_ratio=args.prefix_ratio, order=args.order)
    return workload_stream(name, args.seed)


def cmd_cache(args: argparse.Namespace) -> int:
    """Replay a prompt stream through one cache per eviction policy; print a table."""
    console = make_console()
    if args.plot:
        from kvroute.cache.plot import load_pyplot
        load_pyplot()  # fail before the work, not after it
    check_output(args.json, "--json")
    check_output(args.plot, "--plot", kind="figure")
    # space- or comma-separated (``lru rlt`` or ``lru,rlt``, as the other commands' lists)
    args.policies = [n.strip() for item in args.policies for n in item.split(",") if n.strip()]
    for name in args.policies:
        EVICTION.get(name)
    params = eviction_args(args, list(args.policies))
    stream = _stream(args)
    text = args.capacity
    if text is None:
        text = (str(stream.capacity) if stream.capacity is not None else
                DEFAULT_CAPACITY["trace" if args.trace else stream.name])
    capacities = parse_capacities(text, stream.unique_units)
    prompts = stream.prompts
    with progress_bar(console) as progress:
        tasks: dict[str, Any] = {}

        def advance(name: str, j: int) -> None:
            if name not in tasks:
                tasks[name] = progress.add_task(name, total=len(prompts))
            progress.update(tasks[name], completed=j)
            if j == len(prompts):
                progress.remove_task(tasks.pop(name))

        grid = replay_grid(prompts, capacities, args.policies, params=params,
                           seed=args.seed, page_size=args.page_size, workers=args.workers,
                           progress=advance, inserts=stream.inserts)
    unit = f"{stream.unit}s"
    for g in grid:
        ceil = g["ceilings"]
        columns = (Column("policy", "policy", names=True, right=False),
                   Column("hit", "hit rate", f"hit {unit} / prompt {unit}"),
                   Column("of_opt", "of optimum", "hit rate / the offline optimum's"),
                   Column("evicted", f"evicted {unit}"),
                   Column("seconds", "seconds", "replay time, s"))
        print_table(console, f"{stream.name}: {len(prompts):,} prompts, {stream.units:,} "
                    f"{unit} ({stream.unique_units:,} unique) through one cache of "
                    f"{g['capacity']:,} {unit}", columns, [{
                        "policy": row["policy"], "hit": f"{row['hit_rate']:.4f}",
                        "of_opt": f"{row['hit_rate'] / ceil['optimal']:.1%}"
                        if ceil["optimal"] else "-",
                        "evicted": f"{row['evicted_units']:,}",
                        "seconds": f"{row['seconds']:.2f}"} for row in g["policies"]])
        pooled = f" (pooled over {args.workers} workers)" if args.workers > 1 else ""
        console.print(f"ceilings: infinite cache {ceil['infinite']:.4f}; offline optimum at "
                      f"{ceil['optimal_capacity']:,} {unit}{pooled} {ceil['optimal']:.4f}. "
                      "'of optimum' = hit rate / optimum. Requests are served one at a time "
                      "here; concurrency only lowers real hit rates.")
    if args.json:
        out = {"stream": {"name": stream.name, "unit": stream.unit, "prompts": len(prompts),
                          "units": stream.units, "unique_units": stream.unique_units,
                          **stream.meta},
               "page_size": args.page_size, "workers": args.workers, "seed": args.seed,
               "results": grid}
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)
        console.print(f"wrote {args.json}")
    if args.plot:
        from kvroute.cache.plot import plot_hit_rates
        console.print(f"wrote {plot_hit_rates(grid, args.plot, stream.name, unit)}")
    return 0


def add_parser(sub: Any) -> None:
    c = sub.add_parser("cache", help="replay a prompt stream (workload or trace) through "
                       "each eviction policy", description=cmd_cache.__doc__)
    c.add_argument("--policies", nargs="+", default=list(DEFAULT_POLICIES),
                   metavar="POLICY", help=f"from: {', '.join(policy_names())} "
                   f"(default: {' '.join(DEFAULT_POLICIES)}; spaces or commas between them)")
    c.add_argument("--trace", metavar="FILE",
                   help="a Mooncake-format JSONL trace to replay instead of a workload (or an "
                   "Alibaba Bailian one, or a CSV of lengths only: Azure's or BurstGPT's "
                   "columns, every prompt new)")
    c.add_argument("--unit", choices=UNITS, default="block",
                   help="trace: one unit per hash id (block) or per token")
    c.add_argument("--block-size", type=int,
                   help="trace: tokens per hash id (default: 512, 16 in a Bailian trace)")
    c.add_argument("--workload", choices=STREAM_WORKLOADS,
                   help="the generated stream to replay (default: gsp)")
    c.add_argument("--capacity", metavar="N[,N%...]",
                   help="cache sizes in units, or N%% of the stream's unique units, "
                        "comma-separated (default: 200000 for gsp, the built-in capacity "
                        "for adversarial, 1%%,5%%,10%% otherwise)")
    c.add_argument("--page-size", type=int, default=1, help="units per page")
    c.add_argument("--workers", type=int, default=1,
                   help="report the optimum pooled over this many caches")
    c.add_argument("--groups", type=int, default=128, help="GSP: groups of prompts")
    c.add_argument("--prompts-per-group", type=int, default=32,
                   help="GSP: prompts in each group")
    c.add_argument("--prefix-ratio", type=float, default=0.5,
                   help="GSP: fraction of each prompt shared by its group")
    c.add_argument("--order", choices=ORDERS, default="random", help="GSP: arrival order")
    c.add_argument("--seed", type=seed, default=1,
                   help="seed of the stream and of the policies")
    c.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    c.add_argument("--plot", metavar="PATH",
                   help="hit rate against capacity (PNG/SVG/PDF by its suffix, .png without "
                        "one; needs kvroute[plot])")
    add_arg_flags(c, routing=False)
    c.set_defaults(func=cmd_cache)
