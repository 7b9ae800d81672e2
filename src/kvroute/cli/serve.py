"""``kvroute serve``: the live router in front of OpenAI-compatible / SGLang engines."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from typing import TYPE_CHECKING, Any

from kvroute.cli.policy_flags import (
    DEFAULT_ROUTING,
    ONLINE_ROUTING,
    add_arg_flags,
    choose,
    routing_args,
    seed,
)
from kvroute.cli.worker import dp_size
from kvroute.errors import ConfigError
from kvroute.routing.registry import ROUTING, make_router_policy

if TYPE_CHECKING:
    from kvroute.server.app import RouterApp

__all__ = ["add_parser", "cmd_serve"]

# SGLang router's flags for cache_aware's parameters, kept under their SGLang names
_SGLANG_FLAGS = ("cache_threshold", "balance_abs_threshold", "balance_rel_threshold")


def cmd_serve(args: argparse.Namespace) -> int:
    """Route requests across engine replicas with a kvroute policy (an HTTP reverse proxy)."""
    try:
        from kvroute.server.app import ServeConfig, build_app
    except ImportError as e:
        raise ConfigError("kvroute serve needs httptools, multidict and prometheus-client: "
                          "pip install 'kvroute[serve]'") from e
    [name] = choose(ROUTING, args.policy, "in the live router", ONLINE_ROUTING)
    params = {f: getattr(args, f) for f in _SGLANG_FLAGS if getattr(args, f) is not None}
    params.update(routing_args(args, [name])[name])
    policy = make_router_policy(name, params, seed=args.seed)
    tokenizer = template = None
    if args.tokenizer:
        from kvroute.workloads.chat_template import find_chat_template
        from kvroute.workloads.tokenizer import load_tokenizer

        tokenizer = load_tokenizer(args.tokenizer)
        template = find_chat_template(args.tokenizer)
    if not 0 < args.port < 65536:
        raise ConfigError(f"--port must be in 1..65535, got {args.port}")
    from kvroute.server.kv_events import rank_feeds
    from kvroute.server.membership import with_ranks

    config = ServeConfig(
        worker_urls=with_ranks(args.worker_urls, args.dp_size), tokenizer=tokenizer,
        chat_template=template,
        api_key=args.api_key, decision_log=args.decision_log,
        health_interval=args.health_interval, metrics_interval=args.metrics_interval,
        request_timeout=args.request_timeout,
        max_retries=args.max_retries, failure_threshold=args.failure_threshold,
        cooldown_s=args.cooldown, drain_timeout=args.drain_timeout, seed=args.seed,
        index_capacity=args.index_capacity, kv_events=rank_feeds(args.kv_events, args.dp_size),
        kv_events_engine=args.kv_events_engine, stream_usage=args.stream_usage,
        max_running=args.max_running, dp_rank_field=args.dp_rank_field,
        lora_adapters=frozenset(args.lora_adapters or ()), max_loras=args.max_loras)
    app = build_app(config, policy)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s "
                        "%(message)s")
    units = "characters"
    if tokenizer is not None:
        units = f"tokens (chat template: {template.origin if template else 'Llama-3-like'})"
    feeds = len(app.kv_events)
    banner = (f"kvroute serve: policy {args.policy}, {len(config.worker_urls)} workers, "
              f"units {units}, " + (f"KV events from {feeds}, " if feeds else "")
              + f"listening on http://{args.host}:{args.port}")
    _quiet_gc()
    loop = _event_loop()
    try:
        loop.run_until_complete(_serve(app, args.host, args.port, banner))
    finally:
        loop.close()
    return 0


async def _serve(app: RouterApp, host: str, port: int, banner: str) -> None:
    """Listen until SIGINT or SIGTERM, then stop gracefully (``RouterApp.stop``)."""
    try:
        await app.start(host, port)
    except OSError as e:
        raise ConfigError(f"cannot listen on {host}:{port} ({e.strerror or e})") from None
    print(banner, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
        for sig in (signal.SIGINT, signal.SIGTERM):  # a second one stops at once
            with contextlib.suppress(NotImplementedError):
                loop.remove_signal_handler(sig)
    finally:
        await app.stop()


def _quiet_gc() -> None:
    """Fewer, cheaper garbage collections for a long-running proxy: what exists at start
    (modules, the app) is frozen out of every collection, and the youngest generation is
    collected every 20,000 allocations instead of 700 (a proxied request allocates a few
    hundred objects; reference counting frees almost all of them)."""
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


def _event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop when it is installed (the serve extra has it; about a fifth less CPU
    per proxied request), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def add_parser(sub: Any) -> None:
    s = sub.add_parser("serve", help="run the live router (an HTTP reverse proxy)",
                       description=cmd_serve.__doc__)
    s.add_argument("--worker-urls", nargs="+", required=True, metavar="URL",
                   help="engine base URLs, e.g. http://127.0.0.1:30000; URL@R is rank R of "
                        "a data-parallel engine (vllm serve --data-parallel-size), routed "
                        "to as a worker of its own with X-data-parallel-rank: R")
    s.add_argument("--dp-size", type=dp_size, default=1, metavar="N",
                   help="every --worker-urls engine runs N data-parallel ranks (vllm serve "
                        "--data-parallel-size N): route to each rank as a worker of its own "
                        "(URL@0 .. URL@N-1), each --kv-events entry giving rank r's feed at "
                        "its ports + r")
    s.add_argument("--dp-rank-field", metavar="NAME",
                   help="also name a rank's requests' rank in the JSON body under NAME, for "
                        "engines that read it there (SGLang: data_parallel_rank, or "
                        "routed_dp_rank in newer versions); default: the header only")
    s.add_argument("--lora-adapters", nargs="+", metavar="NAME",
                   help="the engines' LoRA adapters, as requests name them (OpenAI 'model', "
                        "SGLang 'lora_path'): the prefix index keeps each adapter's prompts "
                        "apart, as the engines' caches do; default: none")
    s.add_argument("--max-loras", type=int, metavar="N",
                   help="the engines run at most N LoRA adapters at once, where their "
                        "/metrics does not say (SGLang's --max-loras-per-batch; vLLM reports "
                        "its --max-loras): learned routes an adapter's request away from a "
                        "worker whose adapter slots are all taken, and prices the slot "
                        "each request holds by the wait it costs the others")
    s.add_argument("--policy", default=DEFAULT_ROUTING,
                   help=f"routing policy, from: {', '.join(ROUTING.names(**ONLINE_ROUTING))}")
    add_arg_flags(s, eviction=False)
    s.add_argument("--host", default="127.0.0.1", help="address to listen on")
    s.add_argument("--port", type=int, default=8000, help="port to listen on")
    s.add_argument("--tokenizer", metavar="PATH",
                   help="tokenizer.json: route on token ids, chat through the chat_template "
                        "of the tokenizer_config.json beside it (default: on characters, as "
                        "SGLang's router)")
    s.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on the admin API")
    s.add_argument("--decision-log", metavar="PATH",
                   help="append one JSON line per decision and per outcome")
    s.add_argument("--health-interval", type=float, default=5.0,
                   help="seconds between GET /health checks of every worker (0: off)")
    s.add_argument("--metrics-interval", type=float, default=1.0,
                   help="seconds between scrapes of every worker's /metrics for the engine-"
                        "reported load (running, queued, KV usage) that llmd and least_load "
                        "read (0: off)")
    s.add_argument("--request-timeout", type=float, default=600.0,
                   help="seconds a request may take upstream")
    s.add_argument("--max-retries", type=int, default=2,
                   help="retries on another worker (connection errors, 5xx, 408, 429)")
    s.add_argument("--failure-threshold", type=int, default=3,
                   help="consecutive failures that open a worker's circuit breaker")
    s.add_argument("--cooldown", type=float, default=30.0,
                   help="seconds an open circuit breaker keeps a worker out")
    s.add_argument("--drain-timeout", type=float, default=30.0,
                   help="on SIGINT/SIGTERM, seconds to wait for requests in flight")
    s.add_argument("--seed", type=seed, default=0, help="seed of the policy and retry jitter")
    s.add_argument("--index-capacity", type=int, metavar="UNITS",
                   help="most routing units the prefix index keeps per worker (default: each "
                        "engine's reported KV pool times the routing units a token, measured "
                        "from the prompt_tokens the engines report (1 with --tokenizer, else "
                        "4 characters a token, until a reply carries them); 2^24 until a "
                        "worker reports its pool)")
    s.add_argument("--max-running", type=int, metavar="N",
                   help="the engines' cap on requests running at once (vLLM's "
                        "--max-num-seqs), for engines whose /metrics does not say it "
                        "(SGLang's does); learned then predicts the wait for a slot")
    s.add_argument("--kv-events", nargs="+", metavar="ENDPOINT[,REPLAY]",
                   help="each worker's KV-event publisher, in the order of --worker-urls "
                        "('-' for none), e.g. tcp://10.0.0.5:5557,tcp://10.0.0.5:5558: the "
                        "router then knows that engine's cache exactly (needs --tokenizer "
                        "and kvroute[events]); vLLM publishes rank R of a data-parallel "
                        "engine on its port + R")
    s.add_argument("--stream-usage", action="store_true",
                   help="ask the engines for each streamed request's usage (OpenAI APIs: "
                        "stream_options.include_usage, when the client sent no "
                        "stream_options) and take it out of the client's stream, so that "
                        "the policy hears the cached tokens of every streamed request")
    s.add_argument("--kv-events-engine", choices=("vllm", "sglang"), default="vllm",
                   help="the engines' event schema")
    p = s.add_argument_group("SGLang router's names for cache_aware's parameters "
                             "(the same as --policy-arg KEY=VALUE)")
    p.add_argument("--cache-threshold", type=float,
                   help="cache_aware: prefix-match fraction that routes to the best match")
    p.add_argument("--balance-abs-threshold", type=int,
                   help="cache_aware: in-flight gap (requests) that triggers load balancing")
    p.add_argument("--balance-rel-threshold", type=float,
                   help="cache_aware: in-flight ratio that also must hold to balance")
    s.set_defaults(func=cmd_serve)
