"""``kvroute compare``: a grid of simulator runs with a table, ratios, JSON and plots."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from kvroute.cache.eviction.registry import EVICTION
from kvroute.cli.console import check_output, make_console, need_matplotlib, progress_bar
from kvroute.cli.policy_flags import (
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
from kvroute.errors import ConfigError
from kvroute.routing.registry import ROUTING
from kvroute.sim.cluster import SimConfig
from kvroute.sim.grid import Grid, GridInterrupted, run_grid
from kvroute.sim.grid_results import (
    METRICS,
    aggregate,
    fmt,
    markdown_table,
    plot_grid,
    plot_load_ratios,
)
from kvroute.sim.load import ABOVE_ONE, check_load
from kvroute.sim.routing_results import routing_markdown
from kvroute.sim.step_model import parse_speeds
from kvroute.sim.step_profiles import DEFAULT_PROFILE, load_profile
from kvroute.workloads.catalog import WORKLOAD_NAMES
from kvroute.workloads.gsp import ORDERS

__all__ = ["PRESETS", "add_parser", "cmd_compare"]

# The paper's grid (paper.md 7-8) and the same workloads against the 2026 routers.
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"workloads": ("gsp", "sharegpt", "ultrachat", "loogle"), "orders": ORDERS,
              "evictions": ("lru", "rlt"),
              "routings": ("random", "round_robin", "cache_aware", "lbgr"),
              "seeds": (1, 2, 3), "baseline": "lru+cache_aware", "focus": "rlt+lbgr"},
    "baselines": {"workloads": ("gsp", "sharegpt", "ultrachat", "loogle"), "orders": ("random",),
                  "evictions": ("rlt",),
                  "routings": ("cache_aware", "cache_aware_v2", "dynamo", "lmetric", "llmd",
                               "llmd_predicted", "smetric", "loadaware", "ray_prefix",
                               "aibrix_prefix", "least_load", "prefix_hash", "lbgr", "oracle"),
                  "seeds": (1, 2, 3), "baseline": "rlt+cache_aware", "focus": "rlt+lbgr"},
    "routers": {"workloads": ("gsp", "loogle", "sharegpt"), "orders": ORDERS,
                "loads": (0.5, 0.8, 0.95), "evictions": ("rlt",), "routings": "all",
                "seeds": (1, 2, 3), "baseline": "rlt+cache_aware_v2", "focus": "rlt+learned",
                "ranks": True},
}
# the console table: names, short headers with units (compare's latencies are in seconds)
TABLE = (
    Column("workload", "workload", names=True, right=False),
    Column("order", "order", names=True, right=False),
    Column("load", "load", names=True),
    Column("eviction", "eviction", names=True, right=False),
    Column("routing", "routing", names=True, right=False),
    Column("hit_rate", "hit", "prefix-cache hit rate"),
    Column("ceiling_optimal", "opt", "the pooled offline optimum's hit rate"),
    Column("ttft_mean", "TTFT s", "mean time to first token, s"),
    Column("ttft_p99", "TTFT p99", "its 99th percentile, s"),
    Column("e2e_mean", "E2E s", "mean end-to-end latency, s"),
    Column("e2e_p99", "E2E p99", "its 99th percentile, s"),
    Column("throughput", "req/s", "requests completed per second"),
    Column("x_hit", "x hit", "hit rate / the baseline's"),
    Column("x_ttft", "x TTFT", "the baseline's mean TTFT / this one's"),
    Column("x_e2e", "x E2E", "the baseline's mean E2E / this one's"),
    Column("throughput_gain", "thr +", "throughput gain over the baseline"),
)
DEFAULT_COLUMNS = ("hit_rate", "ttft_mean", "e2e_mean", "x_ttft", "x_e2e", "ceiling_optimal",
                   "ttft_p99", "e2e_p99")
COLUMNS = ("workload", "order", "load", "eviction", "routing", "hit_rate", "ceiling_optimal",
           "ttft_mean", "ttft_p99", "e2e_mean", "e2e_p99", "throughput", "x_hit", "x_ttft",
           "x_e2e", "throughput_gain")


def _csv(text: str, known: list[str] | tuple[str, ...], what: str) -> tuple[str, ...]:
    """Comma-separated names, each one of ``known``."""
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    bad = [n for n in names if n not in known]
    if bad or not names:
        raise ConfigError(f"unknown {what} {', '.join(bad) or repr(text)}; choose from: "
                          f"{', '.join(known)}")
    return names


def _each(text: str, convert: Any, flag: str) -> tuple[Any, ...]:
    """Comma-separated values of ``flag``, each through ``convert`` (an argparse type or a
    checker raising ConfigError)."""
    try:
        return tuple(convert(x.strip()) for x in text.split(",") if x.strip())
    except (argparse.ArgumentTypeError, ConfigError) as exc:
        raise ConfigError(f"{flag}: {exc}") from None


def _load(text: str) -> float:
    try:
        value: object = float(text)
    except ValueError:
        value = text
    return check_load(value)


def _options(items: list[str]) -> dict[str, dict[str, Any]]:
    """``-o gsp.groups=16 -o sharegpt.clients=8`` -> {"gsp": {"groups": 16}, ...}."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        m = re.fullmatch(r"(\w+)\.(\w+)=(.+)", item)
        if not m:
            raise ConfigError(f"workload option {item!r} is not WORKLOAD.KEY=VALUE")
        wl, key, raw = m.groups()
        if wl not in WORKLOAD_NAMES:
            raise ConfigError(f"option {item!r}: unknown workload {wl}")
        value: Any
        try:
            value = json.loads(raw)
        except ValueError:
            try:
                value = float(raw)  # nan, inf: not JSON
            except ValueError:
                value = raw
        out.setdefault(wl, {})[key] = tuple(value) if isinstance(value, list) else value
    return out


def _check_options(options: dict[str, dict[str, Any]], workloads: tuple[str, ...],
                   grid_loads: bool) -> None:
    """No ``-o`` that the grid would silently ignore: one for a workload it does not run,
    gsp's order (``--orders`` sets it) or a load beside ``--loads``."""
    for wl, opts in options.items():
        key = next(iter(opts))
        if wl not in workloads:
            how = "--trace FILE" if wl == "mooncake" else "--workloads"
            raise ConfigError(f"-o {wl}.{key}: {wl} is not among the grid's workloads "
                              f"({', '.join(workloads)}); add it with {how}")
        if wl == "gsp" and "order" in opts:
            raise ConfigError("-o gsp.order: the grid sets gsp's arrival order from --orders; "
                              "use --orders " + str(opts["order"]))
        if grid_loads and "load" in opts:
            raise ConfigError(f"-o {wl}.load: --loads (or the preset's loads) sets every "
                              "workload's load; give one or the other")


def _markers(path: Path, section: str) -> tuple[str, str, str]:
    """The doc's text and ``section``'s markers, checked (before the grid runs, and again
    when it is written)."""
    begin, end = f"<!-- BEGIN {section} -->", f"<!-- END {section} -->"
    try:
        doc = path.read_text()
    except OSError as exc:
        raise ConfigError(f"--update-doc: cannot read {path}: {exc.strerror}") from None
    if begin not in doc or end not in doc:
        raise ConfigError(f"--update-doc: {path} has no '{begin}' ... '{end}' markers to "
                          "replace")
    return doc, begin, end


def _update_doc(path: Path, section: str, text: str) -> None:
    doc, begin, end = _markers(path, section)
    head, rest = doc.split(begin, 1)
    path.write_text(head + begin + "\n" + text + "\n" + end + rest.split(end, 1)[1])


def cmd_compare(args: argparse.Namespace) -> int:
    """Run a grid of eviction x routing x workload x seed in the simulator, in parallel;
    with more than one routing policy, rank them in each cell."""
    console = make_console()
    columns = choose_columns(TABLE, args.columns, DEFAULT_COLUMNS)
    if args.out and args.plot:
        need_matplotlib("--out (its plots; --no-plot skips them)")
    check_output(args.out, "--out", kind="directory")
    if args.jobs is not None and args.jobs < 1:
        raise ConfigError(f"--jobs must be >= 1 (leave it out for all cores), got {args.jobs}")
    preset = PRESETS[args.preset] if args.preset else {}
    section = args.section or args.preset or "results"
    focus = args.focus or preset.get("focus")
    if args.update_doc:  # the sections it will replace, before the grid runs
        for name in (section, f"{section}-ranks" if preset.get("ranks") else None,
                     f"{section}-focus" if focus else None):
            if name:
                _markers(Path(args.update_doc), name)

    def pick(name: str, default: str) -> str:
        """A flag the user gave, else the preset's value, else ``default``."""
        value = preset.get(name, ())
        if value == "all":  # every registered routing policy
            value = ROUTING.names()
        return getattr(args, name) or ",".join(map(str, value)) or default

    workloads = _csv(pick("workloads", "gsp"), WORKLOAD_NAMES, "workload")
    if args.trace and not Path(args.trace).exists():  # before the grid is announced
        raise ConfigError(f"{args.trace}: trace file not found")
    if args.trace and "mooncake" not in workloads:
        workloads = (*workloads, "mooncake")
    seeds = _each(pick("seeds", "1"), seed, "--seeds") or (1,)
    baseline_text = args.baseline or preset.get("baseline", "lru+round_robin")
    ev_b, _, ro_b = baseline_text.partition("+")
    model = load_profile(args.profile)
    evictions = choose(EVICTION, pick("evictions", "lru,rlt"), "in the simulator", ONLINE)
    routings = choose(ROUTING, pick("routings", "round_robin,lbgr"), "in the simulator",
                      SIMULATED)
    for flag, pair in (("--baseline", args.baseline), ("--focus", args.focus)):
        ev, _, ro = (pair or "").partition("+")
        if pair and (ev not in evictions or ro not in routings):
            raise ConfigError(f"{flag} {pair}: not a pair of the grid (EVICTION+ROUTING, "
                              f"from evictions {', '.join(evictions)} and routings "
                              f"{', '.join(routings)})")
    loads = _each(pick("loads", ""), _load, "--loads") or (None,)
    options = _options(args.option)
    _check_options(options, workloads, loads != (None,))
    grid = Grid(
        workloads=workloads,
        loads=loads,
        orders=_csv(pick("orders", "random"), ORDERS, "order"),
        evictions=tuple(evictions),
        routings=tuple(routings),
        seeds=seeds,
        sim=SimConfig(workers=args.workers, profile=args.profile, model=model,
                      capacity=args.capacity, chunk_size=args.chunk_size,
                      max_running=args.max_running, mixed_chunk=args.mixed_chunk,
                      router_replicas=args.router_replicas, adapters=args.adapters,
                      max_loras=args.max_loras,
                      speeds=parse_speeds(args.speeds),
                      index=args.index, event_delay=args.event_delay,
                      block_size=args.event_block_size, max_tokens=args.max_tokens,
                      report_cached=args.report_cached, stream_share=args.stream_share),
        workload_options=options,
        eviction_args=eviction_args(args, evictions),
        routing_args=routing_args(args, routings),
        sources={"mooncake": {"trace": args.trace}} if args.trace else {})
    cells = list(grid.cells())
    where = "Ray" if args.ray is not None else f"{args.jobs or 'all'} cores"
    console.print(f"{len(cells)} runs ({len(grid.cases())} workload cases x "
                  f"{len(grid.evictions)} evictions x {len(grid.routings)} routings) on {where}")
    if any(load is not None and load > 1 for load in loads):
        console.print(f"note: {ABOVE_ONE}", style="yellow")
    executor = None
    if args.ray is not None:
        from kvroute.integrations.ray_grid import RayExecutor

        executor = RayExecutor(args.ray or None)
    with progress_bar(console) as progress:
        extra = len(grid.cases()) if args.ceilings else 0
        task = progress.add_task("runs + ceilings" if extra else "runs",
                                 total=len(cells) + extra)
        try:
            runs, ceilings = run_grid(grid, args.jobs, ceilings=args.ceilings,
                                      progress=lambda done, total: progress.update(
                                          task, completed=done),
                                      executor=executor)
            stopped = None
        except GridInterrupted as stop:
            runs, ceilings, stopped = stop.runs, stop.ceilings, stop
    if stopped is not None:
        if not runs:
            console.print("interrupted before any run finished")
            return 130
        console.print(f"{stopped}: the tables below are over the runs that finished (each "
                      "row's count of seeds is in runs.json); --update-doc is skipped",
                      style="yellow")
        cells = [r["cell"] for r in runs]
    baseline = (ev_b, ro_b)
    have = {(c.eviction, c.routing) for c in cells}
    rows = aggregate(runs, ceilings, baseline if baseline in have else None)
    _, higher = METRICS[args.sort]
    rows.sort(key=lambda r: (r["workload"], r["order"], r["load"] or 0.0,
                             -r[args.sort] if higher else r[args.sort]))
    shown = [{c: fmt(r.get(c), c) for c in COLUMNS} for r in rows]
    for cells_, r in zip(shown, rows, strict=True):
        if r.get("source") == "synthetic":
            cells_["workload"] += " (synthetic)"
    print_table(console, f"{len(cells)} runs, means over seeds {list(seeds)}; ratios vs "
                f"{baseline_text} (x: times better)", columns, shown)
    if any(r.get("source") == "synthetic" for r in rows):
        console.print("(synthetic): generated in the dataset's shape, no dataset file given; "
                      "synthetic sharegpt and ultrachat have the same shape, so their rows "
                      "match (pass -o sharegpt.dataset=FILE for real conversations)",
                      markup=False, highlight=False)
    md = markdown_table(rows, COLUMNS)
    focus_md = markdown_table(
        [r for r in rows if f"{r['eviction']}+{r['routing']}" == focus], COLUMNS) if focus else ""
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "table.md").write_text(md + "\n")
        if focus:
            (out / "focus.md").write_text(focus_md + "\n")
        (out / "runs.json").write_text(json.dumps({
            "grid": {"workloads": grid.workloads, "orders": grid.orders,
                     "evictions": grid.evictions, "routings": grid.routings,
                     "seeds": grid.seeds, "sim": grid.sim.describe(),
                     "workload_options": grid.workload_options,
                     "eviction_args": grid.eviction_args, "routing_args": grid.routing_args},
            "rows": rows,
            "ceilings": [{"workload": k[0], "order": k[1], "seed": k[2], **v}
                         for k, v in ceilings.items()],
            "runs": [{"workload": r["cell"].workload, "order": r["cell"].order,
                      "load": r["cell"].load,
                      "eviction": r["cell"].eviction, "routing": r["cell"].routing,
                      "seed": r["cell"].seed, "summary": r["summary"]} for r in runs]},
            indent=1))
        paths = plot_grid(rows, runs, out) if args.plot else []
        if args.plot and focus and len(loads) > 1 and baseline in have:
            ev_f, _, ro_f = focus.partition("+")
            paths += plot_load_ratios(rows, (ev_f, ro_f), out)
        console.print(f"wrote {out}/table.md, runs.json" + (f" and {len(paths)} plots"
                                                           if paths else ""))
    ranks_md = _ranks(rows, grid.evictions) if len(grid.routings) > 1 else ""
    if ranks_md:
        console.print(ranks_md, markup=False, highlight=False)
        if args.out:
            (Path(args.out) / "ranks.md").write_text(ranks_md + "\n")
    if args.update_doc and stopped is None:
        _update_doc(Path(args.update_doc), section, md)
        if preset.get("ranks"):
            _update_doc(Path(args.update_doc), f"{section}-ranks", ranks_md)
        if focus:
            _update_doc(Path(args.update_doc), f"{section}-focus", focus_md)
        console.print(f"updated {args.update_doc}")
    return 0 if stopped is None else 130


def _ranks(rows: list[dict[str, Any]], evictions: tuple[str, ...]) -> str:
    """The routing policies' ranks and advantages in each cell (``routing_markdown``),
    for each eviction policy apart."""
    parts = []
    for ev in evictions:
        md = routing_markdown([r for r in rows if r["eviction"] == ev],
                              ROUTING.names(needs_probes=True))
        parts.append(md if len(evictions) == 1 else f"With eviction `{ev}`:\n\n{md}")
    return "\n\n".join(parts)


def add_parser(sub: Any) -> None:
    c = sub.add_parser("compare", help="run a grid of policies x workloads x seeds",
                       description=cmd_compare.__doc__)
    c.add_argument("--paper", dest="preset", action="store_const", const="paper",
                   help="the paper's grid: {lru,rlt} x {random,round_robin,cache_aware,lbgr} x "
                        "{gsp,sharegpt,ultrachat,loogle} x gsp orders x 3 seeds")
    c.add_argument("--baselines", dest="preset", action="store_const", const="baselines",
                   help="rlt with the 2026 routers, lbgr and oracle on the same workloads")
    c.add_argument("--routers", dest="preset", action="store_const", const="routers",
                   help="every routing policy (rlt) on gsp (3 orders), loogle, sharegpt (open "
                        "loop) and --trace, at loads 0.5, 0.8, 0.95 x 3 seeds; with ranks and "
                        "geometric-mean advantages (docs/routing-results.md)")
    c.add_argument("--workloads", help=f"comma-separated, from: {', '.join(WORKLOAD_NAMES)}")
    c.add_argument("--orders", help=f"gsp arrival orders, from: {', '.join(ORDERS)}")
    c.add_argument("--evictions", help="comma-separated, from: "
                   f"{', '.join(EVICTION.names(**ONLINE))}")
    c.add_argument("--routings", help=f"comma-separated, from: {', '.join(ROUTING.names())}")
    add_arg_flags(c)
    c.add_argument("--seeds", help="comma-separated seeds (default 1)")
    c.add_argument("--loads", metavar="RHO,...", help="offered loads (fractions of the "
                   "cluster's capacity without cache hits) instead of each workload's rate")
    c.add_argument("-o", "--option", action="append", default=[], metavar="WL.KEY=VALUE",
                   help="workload option, e.g. gsp.rate=8 or sharegpt.clients=64")
    c.add_argument("--trace", metavar="PATH",
                   help="also replay this Mooncake trace (JSONL, or a CSV of lengths only: "
                   "Azure's or BurstGPT's columns)")
    c.add_argument("--workers", type=int, default=4, help="simulated workers per run")
    c.add_argument("--profile", default=DEFAULT_PROFILE,
                   help="step-time profile name or JSON file")
    c.add_argument("--speeds", metavar="S,...",
                   help="each worker's speed relative to the profile, one per worker, e.g. "
                        "1,1,0.5,0.5 (step times divided by it, same KV pool; --load counts "
                        "their sum)")
    c.add_argument("--capacity", type=int, help="KV pool per worker (default: the profile's)")
    add_engine_flags(c)
    add_index_flags(c, both=False)
    add_told_flags(c)
    c.add_argument("--baseline", metavar="EVICTION+ROUTING",
                   help="pair the ratios are taken against (preset's, else lru+round_robin)")
    c.add_argument("--focus", metavar="EVICTION+ROUTING",
                   help="also write its rows alone (focus.md; the presets: rlt+lbgr)")
    c.add_argument("--columns", metavar="A,B,...",
                   help=f"console columns, from: {', '.join(c.key for c in TABLE if not c.names)} "
                        f"(default: {','.join(DEFAULT_COLUMNS)}, those that fit; the written "
                        "table.md has them all)")
    c.add_argument("--sort", choices=tuple(METRICS), default="e2e_mean",
                   help="order of the rows within each workload")
    c.add_argument("--jobs", type=int, help="processes (default: all cores)")
    c.add_argument("--ray", nargs="?", const="", metavar="ADDRESS",
                   help="run the cells as Ray tasks on the cluster at ADDRESS (none: a local "
                        "Ray instance); needs kvroute[ray]; --jobs is ignored")
    c.add_argument("--out", metavar="DIR",
                   help="write table.md, runs.json (ranks.md with more than one routing "
                        "policy) and plots here, created if missing "
                        "(bars per metric; relative_METRIC.png: each pair over the best of "
                        "each cell; an E2E CDF per workload and load)")
    c.add_argument("--no-plot", dest="plot", action="store_false",
                   help="with --out, do not draw the plots (drawn by default)")
    c.add_argument("--no-ceilings", dest="ceilings", action="store_false",
                   help="do not compute the hit-rate ceilings (computed by default)")
    c.add_argument("--update-doc", metavar="FILE.md",
                   help="replace the tables between <!-- BEGIN SECTION --> / <!-- END SECTION "
                        "--> (and SECTION-ranks, SECTION-focus where the grid has them) "
                        "markers in FILE, checked before the grid runs")
    c.add_argument("--section", help="marker name for --update-doc (default: the preset)")
    c.set_defaults(func=cmd_compare)
