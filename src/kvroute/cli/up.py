"""``kvroute up``: N emulated workers and the router on loopback, in one process.

Workers take the first free ports after ``--port``; the router listens on ``--port``.
With ``--bench`` a short ``kvroute bench`` runs against the router (as a separate process,
so that it does not share the servers' event loop) and everything shuts down after it,
printing what the router expected beside what the engines reported; without it, the
servers run until Ctrl-C.

KV events are on by default (``--no-kv-events``: off): every worker publishes its cache's
changes as vLLM events on free loopback ports, the router subscribes to each (with
replay) and routes on the builtin tokenizer's ids, the workers' own.

With ``--dp-size N`` every worker is an engine of N data-parallel ranks behind its one port
(``kvroute worker --dp-size``), and the router routes to each rank as a worker of its own
(``URL@R``, with its own KV-event feed): ``--workers`` x N routing targets.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import signal
import socket
import sys
from typing import TYPE_CHECKING, Any

from kvroute.cache.eviction.registry import EVICTION
from kvroute.cli.policy_flags import (
    DEFAULT_EVICTION,
    DEFAULT_ROUTING,
    ONLINE,
    ONLINE_ROUTING,
    add_arg_flags,
    choose,
    eviction_args,
    routing_args,
    seed,
)
from kvroute.cli.worker import dp_size
from kvroute.errors import ConfigError, KvrouteError
from kvroute.routing.registry import ROUTING, make_router_policy
from kvroute.sim.step_model import parse_speeds
from kvroute.sim.step_profiles import DEFAULT_PROFILE
from kvroute.workloads.catalog import WORKLOAD_NAMES

if TYPE_CHECKING:
    from kvroute.server.app import RouterApp

__all__ = ["add_parser", "cmd_up", "expected_vs_reported"]


def _free_ports(host: str, after: int, n: int) -> list[int]:
    ports: list[int] = []
    port = after + 1
    while len(ports) < n and port < 65536:
        with socket.socket() as s:
            try:
                s.bind((host, port))
                ports.append(port)
            except OSError as e:  # a port taken is skipped; a host we cannot use is not
                if e.errno not in (errno.EADDRINUSE, errno.EACCES):
                    raise ConfigError(f"--host {host}: cannot listen there "
                                      f"({e.strerror or e})") from None
        port += 1
    if len(ports) < n:
        raise ConfigError(f"no {n} free ports after {after} on {host}")
    return ports


async def _up(args: argparse.Namespace) -> int:
    from aiohttp import ClientSession, ClientTimeout, web

    from kvroute.server.app import ServeConfig, build_app
    from kvroute.worker import RANKS_KEY, EmulatedConfig, create_app
    from kvroute.workloads.tokenizer import load_tokenizer

    host = args.host
    ports = _free_ports(host, args.port, args.workers)
    runners: list[web.AppRunner] = []
    router: RouterApp | None = None
    zmq = f"tcp://{host}:*"
    feeds: list[str] = []
    adapters = tuple(f"lora{k}" for k in range(args.adapters))
    try:
        for k, port in enumerate(ports):
            app = create_app(EmulatedConfig(profile=args.profile, eviction=args.eviction,
                                            eviction_args=args.eviction_params,
                                            capacity=args.capacity, seed=args.seed + k,
                                            speed=args.speed * args.speeds[k],
                                            kv_events_endpoint=zmq if args.kv_events else None,
                                            kv_events_replay_endpoint=zmq if args.kv_events
                                            else None, dp_size=args.dp_size,
                                            lora_modules=adapters, max_loras=args.max_loras))
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, host, port).start()
            runners.append(runner)
            feeds += [f"{e},{r}" for e, r in app[RANKS_KEY].kv_event_endpoints]
        urls = [f"http://{host}:{p}" for p in ports]
        targets = urls if args.dp_size == 1 else [
            f"{u}@{r}" for u in urls for r in range(args.dp_size)]
        policy = make_router_policy(args.policy, args.policy_params, seed=args.seed)
        serve = ServeConfig(worker_urls=targets, seed=args.seed, lora_adapters=frozenset(adapters))
        if feeds:
            serve.tokenizer, serve.kv_events = load_tokenizer(None), feeds
        routing = build_app(serve, policy)
        try:
            await routing.start(host, args.port)
        except OSError as e:
            raise ConfigError(f"cannot listen on {host}:{args.port} ({e.strerror}); "
                              "choose another --port") from None
        router = routing
        base = f"http://{host}:{args.port}"
        async with ClientSession(timeout=ClientTimeout(total=5)) as http:
            for url in [*urls, base]:
                async with http.get(f"{url}/health") as resp:
                    if resp.status != 200:
                        raise KvrouteError(f"{url} is not healthy ({resp.status})")
        ranks = f", {args.dp_size} data-parallel ranks each" if args.dp_size > 1 else ""
        print(f"kvroute up: {args.workers} emulated workers ({args.profile}, eviction "
              f"{args.eviction}, speed x{args.speed:g}{ranks}): {' '.join(urls)}", flush=True)
        if feeds:
            print(f"KV events (vLLM form, with replay): {' '.join(feeds)}", flush=True)
        print(f"router ({args.policy}): {base}  (OpenAI /v1/completions, "
              "/v1/chat/completions, /v1/responses; SGLang /generate; /metrics; /workers)",
              flush=True)
        if args.bench:
            # workers of the profile's own speed and pool, one rank each: the bench can say
            # what load it offers them
            plain = (args.speed == 1 and set(args.speeds) == {1.0} and args.dp_size == 1
                     and args.capacity is None)
            cluster = ["--profile", args.profile, "--workers", str(args.workers)] if plain else []
            cmd = [sys.executable, "-m", "kvroute", "bench", "--url", base,
                   "--workload", args.bench_workload, "--requests", str(args.bench_requests),
                   "--adapters", str(args.adapters), *cluster,
                   *[a for u in urls for a in ("--metrics-url", u)], *args.bench_arg]
            proc = await asyncio.create_subprocess_exec(*cmd)
            rc = await proc.wait()
            print(expected_vs_reported(routing), flush=True)
            policy = routing.router.policy
            for line in (prediction_errors(policy.name, policy.telemetry()), held_line(routing)):
                if line:
                    print(line, flush=True)
            return rc
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        print("Ctrl-C stops everything.", flush=True)
        await stop.wait()
        return 0
    finally:
        if router is not None:
            await router.stop()
        for runner in reversed(runners):
            await runner.cleanup()


def expected_vs_reported(app: RouterApp) -> str:
    """One line from the router's own counters: the hit rate it expected (exact and
    approximate indexes apart) beside the one the engines reported for the same
    requests, and the KV events it applied."""
    m = app.metrics
    parts = []
    for index in ("exact", "approx"):
        got = {name: sum(s.value for fam in metric.collect() for s in fam.samples
                         if s.name.endswith("_total") and s.labels.get("index") == index)
               for name, metric in (("prompt", m.hit_prompt), ("expected", m.hit_expected),
                                    ("reported", m.hit_reported_units),
                                    ("available", m.hit_available))}
        if got["prompt"]:
            p = got["prompt"]
            parts.append(f"{index} index over {p:,.0f} prompt units: expected "
                         f"{got['expected'] / p:.2%}, engines reported "
                         f"{got['reported'] / p:.2%} (best worker held {got['available'] / p:.2%})")
    events = sum(s.value for fam in app.kv_events.collect() for s in fam.samples
                 if s.name == "kvroute_kv_events_total")
    return "router: " + ("; ".join(parts) or "no request reported cached tokens") + \
        f"; kvroute_kv_events_total {events:,.0f}"


def prediction_errors(name: str, telemetry: dict[str, Any]) -> str:
    """One line from a policy's telemetry of predicted against observed TTFT and E2E
    (``learned``'s), empty if it reports none."""
    parts = []
    for metric in ("ttft", "e2e"):
        err = telemetry.get(metric)
        if isinstance(err, dict) and err.get("count"):
            parts.append(f"{metric.upper()} off by {err['mean_abs_error_s']:.2f} s on average "
                         f"(observed mean {err['mean_observed_s']:.2f} s)")
    if not parts:
        return ""
    return (f"{name}'s predictions over the run: " + ", ".join(parts)
            + " (timed from the routing decision, after any hold at the router; live: "
            "kvroute_policy_telemetry on /metrics)")


def held_line(app: RouterApp) -> str:
    """How many requests the policy held back before routing them (late binding) and for
    how long: the bench's latencies count the hold, the predictions' do not. Empty when
    it held none."""
    samples = {(s.name, s.labels.get("le")): s.value
               for fam in app.metrics.held.collect() for s in fam.samples}
    count = samples.get(("kvroute_held_seconds_count", None), 0.0)
    held = count - samples.get(("kvroute_held_seconds_bucket", "0.0"), 0.0)
    if not held:
        return ""
    total = samples.get(("kvroute_held_seconds_sum", None), 0.0)
    return (f"held at the router before routing (late binding): {held:,.0f} of {count:,.0f} "
            f"requests, {total / held:.2f} s each on average (kvroute_held_seconds)")


def cmd_up(args: argparse.Namespace) -> int:
    """Start emulated workers and the router on loopback; optionally run a short bench."""
    try:
        import aiohttp  # noqa: F401
        import httptools  # noqa: F401
        import prometheus_client  # noqa: F401
    except ImportError:
        raise KvrouteError("kvroute up needs aiohttp, httptools and prometheus-client: "
                           "pip install 'kvroute[serve]'") from None
    if args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    if args.bench_requests < 1:
        raise ConfigError(f"--bench-requests must be >= 1, got {args.bench_requests}")
    if args.speed <= 0:
        raise ConfigError(f"--speed must be > 0, got {args.speed}")
    speeds = parse_speeds(args.speeds)
    if speeds and len(speeds) != args.workers:
        raise ConfigError(f"--speeds: give one speed per worker ({len(speeds)} for "
                          f"{args.workers} workers)")
    args.speeds = list(speeds) or [1.0] * args.workers
    [args.eviction] = choose(EVICTION, args.eviction, "on a worker", ONLINE)
    [args.policy] = choose(ROUTING, args.policy, "in the live router", ONLINE_ROUTING)
    args.eviction_params = eviction_args(args, [args.eviction])[args.eviction]
    args.policy_params = routing_args(args, [args.policy])[args.policy]
    if not 0 < args.port < 65536:
        raise ConfigError(f"--port must be in 1..65535, got {args.port}")
    if args.adapters < 0 or (args.max_loras is not None and args.max_loras < 1):
        raise ConfigError("need --adapters >= 0 and --max-loras >= 1")
    if args.kv_events and args.adapters:
        print("KV events off: the emulated engines' cache is shared by the adapters and "
              "their events name none; the router's index learns from routing", flush=True)
        args.kv_events = False
    if args.kv_events:
        try:
            import msgspec  # noqa: F401
            import zmq  # noqa: F401
        except ImportError:
            print("KV events off: they need pyzmq and msgspec (pip install "
                  "'kvroute[events]')", flush=True)
            args.kv_events = False
    print("starting...", flush=True)
    return asyncio.run(_up(args))


def add_parser(sub: Any) -> None:
    u = sub.add_parser("up", help="start emulated workers and the router on loopback",
                       description=cmd_up.__doc__)
    u.add_argument("--workers", type=int, default=4, help="emulated workers to start")
    u.add_argument("--dp-size", type=dp_size, default=1, metavar="N",
                   help="data-parallel ranks per worker (kvroute worker --dp-size): the "
                        "router routes to each rank as a worker of its own (URL@R)")
    u.add_argument("--eviction", default=DEFAULT_EVICTION,
                   help=f"workers' eviction policy, from: {', '.join(EVICTION.names(**ONLINE))}")
    u.add_argument("--policy", default=DEFAULT_ROUTING,
                   help="router's routing policy, from: "
                        f"{', '.join(ROUTING.names(**ONLINE_ROUTING))}")
    add_arg_flags(u)
    u.add_argument("--profile", default=DEFAULT_PROFILE, help="workers' step-time profile")
    u.add_argument("--capacity", type=int, help="workers' KV pool in tokens (default: the "
                   "profile's)")
    u.add_argument("--speed", type=float, default=1.0,
                   help="run the emulated GPUs this many times faster than the profile")
    u.add_argument("--speeds", metavar="S,...",
                   help="each worker's speed relative to --speed, one per worker, e.g. "
                        "1,1,0.5,0.5 (a fleet of different GPUs)")
    u.add_argument("--host", default="127.0.0.1", help="address of every server")
    u.add_argument("--port", type=int, default=8000, help="router port; workers take the next "
                   "free ones")
    u.add_argument("--seed", type=seed, default=1, help="seed of the policies and the bench")
    u.add_argument("--adapters", type=int, default=0, metavar="N",
                   help="the workers serve N LoRA adapters, lora0 ..., which the router keeps "
                        "apart and --bench's requests name (kvroute bench --adapters); KV "
                        "events are then off (default 0)")
    u.add_argument("--max-loras", type=int, metavar="N",
                   help="each worker runs at most N adapters at once, reported in its "
                        "/metrics as vLLM does (default: no cap)")
    u.add_argument("--no-kv-events", dest="kv_events", action="store_false",
                   help="workers do not publish KV events; the router routes on characters "
                        "with its approximate index only")
    u.add_argument("--bench", action="store_true",
                   help="run kvroute bench against the router, print the router's expected "
                        "and the engines' reported hit rate and (learned) how far its latency "
                        "predictions were off, then stop")
    u.add_argument("--bench-workload", choices=WORKLOAD_NAMES, default="gsp",
                   help="workload of --bench, at its default rate (gsp: 12 requests/s)")
    u.add_argument("--bench-requests", type=int, default=256, help="requests --bench sends")
    u.add_argument("--bench-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for kvroute bench (repeat), e.g. --bench-arg=--rate=4")
    u.set_defaults(func=cmd_up)
