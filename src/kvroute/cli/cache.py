"""``kvroute cache``: replay a GSP prompt stream through one cache per eviction policy."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from kvroute.cache import RadixCache, hit_rate_ceilings, make_policy, policy_names, replay
from kvroute.cache.eviction.registry import EVICTION
from kvroute.cli.console import make_console, need_rich, progress_bar
from kvroute.cli.policy_flags import add_arg_flags, eviction_args
from kvroute.workloads.gsp import ORDERS, GSPConfig, generate_gsp

DEFAULT_POLICIES = ("lru", "rlt", "rlt_faithful", "optimal")


def cmd_cache(args: argparse.Namespace) -> int:
    """Replay a GSP prompt stream through one cache per eviction policy; print a table."""
    rich = need_rich()
    console = make_console()
    classes = {name: EVICTION.get(name) for name in args.policies}
    params = eviction_args(args, list(classes))
    cfg = GSPConfig(groups=args.groups, prompts_per_group=args.prompts_per_group,
                    prefix_ratio=args.prefix_ratio, order=args.order, seed=args.seed)
    stream = generate_gsp(cfg)
    prompts = stream.prompts
    rows = []
    with progress_bar(console) as progress:
        task = progress.add_task("ceilings", total=1)
        ceil = hit_rate_ceilings(prompts, args.capacity, workers=args.workers,
                                 page_size=args.page_size)
        progress.update(task, completed=1)
        for name in args.policies:
            task = progress.add_task(name, total=len(prompts))
            future = {"requests": prompts} if classes[name].needs_future else {}
            policy = make_policy(name, params[name], seed=args.seed, **future)
            cache = RadixCache(args.capacity, policy, page_size=args.page_size)
            start = time.perf_counter()
            def advance(j: int, task: Any = task) -> None:
                progress.update(task, completed=j)

            result = replay(cache, prompts, progress=advance)
            rows.append({"policy": name, "hit_rate": result.hit_rate,
                         "hit_tokens": result.hit_tokens,
                         "evicted_tokens": result.evicted_tokens,
                         "seconds": time.perf_counter() - start})
    table = rich.table.Table(
        title=f"GSP {cfg.groups}x{cfg.prompts_per_group} ({cfg.order} order): "
              f"{len(prompts):,} prompts, {stream.prompt_tokens:,} tokens through one cache "
              f"of {args.capacity:,} tokens")
    for col in ("policy", "hit rate", "of ceiling", "evicted tokens", "seconds"):
        table.add_column(col, justify="right")
    for row in rows:
        table.add_row(row["policy"], f"{row['hit_rate']:.4f}",
                      f"{row['hit_rate'] / ceil.optimal:.1%}" if ceil.optimal else "-",
                      f"{row['evicted_tokens']:,}", f"{row['seconds']:.2f}")
    console.print(table)
    pooled = f" (pooled over {args.workers} workers)" if args.workers > 1 else ""
    console.print(f"ceilings: infinite cache {ceil.infinite:.4f}; offline optimum at "
                  f"{args.capacity * args.workers:,} tokens{pooled} {ceil.optimal:.4f}. "
                  "'of ceiling' = hit rate / optimum. Requests are served one at a time here;"
                  " concurrency only lowers real hit rates.")
    if args.json:
        workload = {k: getattr(cfg, k) for k in cfg.__dataclass_fields__}
        out = {"workload": {"name": "gsp", **workload},
               "capacity": args.capacity, "page_size": args.page_size,
               "ceilings": {"infinite": ceil.infinite, "optimal": ceil.optimal,
                            "optimal_capacity": args.capacity * args.workers},
               "policies": rows}
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)
        console.print(f"wrote {args.json}")
    return 0


def add_parser(sub: Any) -> None:
    c = sub.add_parser("cache", help="replay a GSP prompt stream through each eviction policy",
                       description=cmd_cache.__doc__)
    c.add_argument("--policies", nargs="+", default=list(DEFAULT_POLICIES),
                   metavar="POLICY", help=f"from: {', '.join(policy_names())} "
                   f"(default: {' '.join(DEFAULT_POLICIES)})")
    c.add_argument("--capacity", type=int, default=200_000, help="cache size in tokens")
    c.add_argument("--page-size", type=int, default=1, help="tokens per page")
    c.add_argument("--workers", type=int, default=1,
                   help="report the optimum pooled over this many caches")
    c.add_argument("--groups", type=int, default=128, help="GSP: groups of prompts")
    c.add_argument("--prompts-per-group", type=int, default=32,
                   help="GSP: prompts in each group")
    c.add_argument("--prefix-ratio", type=float, default=0.5,
                   help="GSP: fraction of each prompt shared by its group")
    c.add_argument("--order", choices=ORDERS, default="random", help="GSP: arrival order")
    c.add_argument("--seed", type=int, default=1,
                   help="seed of the stream and of the policies")
    c.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    add_arg_flags(c, routing=False)
    c.set_defaults(func=cmd_cache)
