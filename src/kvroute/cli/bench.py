"""``kvroute bench``: send a workload to a real endpoint and measure it client-side."""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kvroute.cli.console import check_output, make_console, progress_bar
from kvroute.cli.policy_flags import seed
from kvroute.cli.tables import Column, print_table
from kvroute.cli.workload_flags import add_workload_flags, build_workload
from kvroute.errors import KvrouteError
from kvroute.protocol.request_body import APIS
from kvroute.sim.load import arrival_line, rate_line
from kvroute.sim.step_profiles import DEFAULT_PROFILE, load_profile
from kvroute.sim.worker import WorkerConfig
from kvroute.workloads.catalog import WORKLOAD_NAMES
from kvroute.workloads.request import OpenLoop

if TYPE_CHECKING:  # aiohttp (kvroute[serve]) is imported only when the command runs
    from kvroute.bench.results import BenchRun, RequestResult

__all__ = ["add_parser", "cmd_bench"]

SHOWN_FAILURES = 10

def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1000:,.1f}" if seconds < 10 else f"{seconds:,.1f}s"


def _rate(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


TOP = (
    Column("ok", "ok", "requests answered"), Column("failed", "failed", "requests that failed"),
    Column("duration", "s", "duration, s"), Column("rps", "req/s", "requests per second"),
    Column("ptps", "prompt tok/s", "prompt tokens per second"),
    Column("otps", "output tok/s", "output tokens per second"),
    Column("hit_cluster", "hit rate (cluster)", "prefix-cache hit rate from the workers' /metrics"),
    Column("hit_client", "hit rate (client)", "from the replies' cached_tokens"),
)
LATENCY = (Column("metric", "ms", names=True, right=False),
           *(Column(q, q) for q in ("mean", "p50", "p90", "p99", "max")))


def _print_tables(console: Any, s: dict[str, Any], title: str) -> None:
    def num(x: float | None, fmt: str) -> str:
        return "-" if x is None else format(x, fmt)

    print_table(console, title, TOP, [{
        "ok": f"{s['requests_ok']:,}", "failed": f"{s['requests_failed']:,}",
        "duration": f"{s['duration_s']:,.2f}", "rps": num(s["throughput_rps"], ".2f"),
        "ptps": num(s["prompt_tps"], ",.0f"), "otps": num(s["output_tps"], ",.1f"),
        "hit_cluster": _rate(s["hit_rate_cluster"]), "hit_client": _rate(s["hit_rate_client"])}])
    print_table(console, "latency (ms unless marked s)", LATENCY, [
        {"metric": name, **{c: _ms(s[key][c]) for c in ("mean", "p50", "p90", "p99", "max")}}
        for name, key in (("TTFT", "ttft_s"), ("E2E", "e2e_s"), ("TPOT", "tpot_s"))])


def _failures(console: Any, run: BenchRun, s: dict[str, Any]) -> None:
    failed = [r for r in run.results if not r.ok]
    if not failed:
        return
    kinds = ", ".join(f"{k} x{n}" for k, n in s["failures"].items())
    console.print(f"[red]{len(failed)} of {len(run.results)} requests failed[/red]: {kinds}",
                  highlight=False)
    for r in sorted(failed, key=lambda r: r.rid)[:SHOWN_FAILURES]:
        console.print(f"  rid {r.rid} (session {r.session}, turn {r.turn}, {r.api}, "
                      f"sent at {r.sent:.3f} s): {r.error}", markup=False, highlight=False)
    if len(failed) > SHOWN_FAILURES:
        console.print(f"  ... and {len(failed) - SHOWN_FAILURES} more (see --json)")


def cmd_bench(args: argparse.Namespace) -> int:
    """Send a workload's requests to an OpenAI-compatible or SGLang endpoint (open loop at
    the workload's arrival times, or --concurrency clients) and report TTFT, E2E,
    throughput and the cluster's prefix-cache hit rate from the workers' /metrics."""
    try:
        from kvroute.bench.config import BenchConfig
        from kvroute.bench.loadgen import run_bench
        from kvroute.bench.summary import summarize
    except ImportError:
        raise KvrouteError("kvroute bench needs aiohttp and prometheus-client: "
                           "pip install 'kvroute[serve]'") from None
    check_output(args.json, "--json")
    console = make_console()
    cfg = BenchConfig(url=args.url, api=args.api, model=args.model,
                      concurrency=args.concurrency, requests=args.requests,
                      duration=args.duration, timeout=args.timeout,
                      metrics_urls=tuple(args.metrics_url or ()),
                      max_tokens=args.max_tokens, adapters=args.adapters)
    model = load_profile(args.profile)
    workers = 1 if args.workers is None else args.workers
    workload, rate = build_workload(args, model=model, workers=workers)
    if rate is not None:
        console.print(rate_line(args.load, rate))
    elif args.workers is not None and isinstance(workload, OpenLoop):
        # the cluster is known: say what load the requests' own arrival times offer it
        sent = workload if args.requests is None else OpenLoop.of(
            workload.name, list(itertools.islice(workload, args.requests)))
        console.print(arrival_line(sent, model, workers, WorkerConfig.chunk_size,
                                   hint="--rate or --load picks the rate"))
    total = workload.size if args.requests is None else min(workload.size or args.requests,
                                                             args.requests)
    with progress_bar(console) as progress:
        task = progress.add_task(f"{workload.name} -> bench", total=total)
        failed = 0

        def on_result(res: RequestResult) -> None:
            nonlocal failed
            failed += not res.ok
            desc = f"{workload.name} ({failed} failed)" if failed else workload.name
            progress.update(task, advance=1, description=desc)

        run = asyncio.run(run_bench(workload, cfg, on_result))
    s = summarize(run, workload.name, cfg.base_url)
    unsent = f", {s['requests_unsent']:,} not sent (--duration)" if s["requests_unsent"] else ""
    mode = run.mode + (f", {run.concurrency} clients" if run.concurrency else "")
    title = (f"{workload.name} -> {cfg.base_url} ({len(run.results):,} requests sent{unsent}; "
             f"{mode}; model {run.model or 'default'})")
    _print_tables(console, s, title)
    if s["per_worker"] and any(w["worker"] is not None for w in s["per_worker"]):
        console.print("per worker (X-Kvroute-Worker): " + ", ".join(
            f"{w['worker'] or '?'}: {w['requests']}" for w in s["per_worker"]),
            markup=False, highlight=False)
    for row in s["cluster"]["per_url"]:
        if "error" in row:
            console.print(f"metrics {row['url']}: {row['error']}", markup=False,
                          style="yellow")
    if s["usage_reported"] < s["requests_ok"]:
        console.print(f"{s['requests_ok'] - s['usage_reported']} replies had no usage "
                      "report: their prompt tokens are the workload's counts")
    _failures(console, run, s)
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"summary": s, "requests": [r.to_json() for r in run.results]}, indent=1))
        console.print(f"wrote {args.json}")
    return 0


def add_parser(sub: Any) -> None:
    s = sub.add_parser("bench", help="load-generate a workload against a real endpoint",
                       description=cmd_bench.__doc__)
    s.add_argument("--url", required=True,
                   help="base URL of the router or engine, e.g. http://localhost:30000")
    s.add_argument("--workload", choices=WORKLOAD_NAMES,
                   help="what to send (synthetic unless --dataset/--trace; default gsp, "
                        "mooncake with --trace)")
    s.add_argument("--api", choices=APIS,
                   help="force one API (default: chat for chat workloads, else completions)")
    s.add_argument("--model", help="model name sent to OpenAI APIs (default: the first of "
                   "GET /v1/models)")
    s.add_argument("--concurrency", type=int, help="closed loop: N clients (chat: sessions "
                   "in flight; open-loop workloads: N workers each sending the next request "
                   "when done)")
    s.add_argument("--requests", type=int, help="send only the first N requests")
    s.add_argument("--duration", type=float, help="stop sending after S seconds")
    s.add_argument("--timeout", type=float, default=300.0, help="per-request timeout, s")
    s.add_argument("--max-tokens", default="exact", metavar="exact|none|N",
                   help="what each request sends as max_tokens: its output (exact, the "
                        "default, with ignore_eos), nothing (none) or a cap of N tokens, as "
                        "chat clients do; with none or N the output goes as min_tokens "
                        "(SGLang: min_new_tokens), where the emulated worker ends it")
    s.add_argument("--adapters", type=int, default=0, metavar="N",
                   help="each request names one of N LoRA adapters, lora0 ... (as its model; "
                        "SGLang's lora_path), by its first 64 tokens with Zipf popularity, "
                        "as kvroute sim --adapters draws them (default 0: the base model)")
    s.add_argument("--metrics-url", action="append", metavar="URL",
                   help="a worker's Prometheus endpoint (repeatable), scraped before and after "
                        "for the cluster hit rate")
    s.add_argument("--json", metavar="PATH", help="write the summary and per-request rows")
    s.add_argument("--seed", type=seed, default=1, help="seed of the workload")
    s.add_argument("--profile", default=DEFAULT_PROFILE,
                   help="with --load or --workers: step-time profile of the workers behind "
                        "--url")
    s.add_argument("--workers", type=int,
                   help="how many workers are behind --url: with --load (default 1), or alone "
                        "to print the load the workload's arrival times offer them")
    add_workload_flags(s, "workload options (as in kvroute sim)")
    s.set_defaults(func=cmd_bench)
