"""``kvroute worker --emulate``: an HTTP engine (SGLang / vLLM API) whose model is the
simulator's worker running in real time; ``--dp-size N`` runs N data-parallel ranks
behind the one port, as ``vllm serve --data-parallel-size N`` does."""

from __future__ import annotations

import argparse
import logging
import socket
from typing import Any

from kvroute.cache.eviction.registry import EVICTION
from kvroute.cli.policy_flags import (
    DEFAULT_EVICTION,
    ONLINE,
    add_arg_flags,
    choose,
    eviction_args,
    seed,
)
from kvroute.errors import ConfigError
from kvroute.sim.step_profiles import DEFAULT_PROFILE, profile_names

__all__ = ["add_parser", "cmd_worker", "dp_size"]


def dp_size(text: str) -> int:
    """An argparse type: a number of data-parallel ranks is an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"the number of data-parallel ranks is an integer "
                                         f">= 1, got {text.strip()!r}")
    return value


def cmd_worker(args: argparse.Namespace) -> int:
    """Serve SGLang's and vLLM's HTTP API with an emulated engine: the simulator's worker
    (scheduler, radix cache, eviction policy, step-time profile) in real time; with
    --dp-size N, N such engines (data-parallel ranks) behind the one port."""
    if not args.emulate:
        raise ConfigError("only emulated workers exist so far: pass --emulate")
    try:
        from aiohttp import web

        from kvroute.worker import EmulatedConfig, create_app
    except ImportError as e:
        raise ConfigError("kvroute worker needs aiohttp and prometheus-client: "
                          "pip install 'kvroute[serve]'") from e
    if not 0 < args.port < 65536:
        raise ConfigError(f"--port must be in 1..65535, got {args.port}")
    [name] = choose(EVICTION, args.eviction, "on a worker", ONLINE)
    params = eviction_args(args, [name])[name]
    config = EmulatedConfig(profile=args.profile, eviction=name, eviction_args=params,
                            capacity=args.capacity, tokenizer=args.tokenizer, seed=args.seed,
                            speed=args.speed, model_name=args.model_name,
                            chunk_size=args.chunk_size, max_running=args.max_running,
                            kv_events_endpoint=args.kv_events_endpoint,
                            kv_events_replay_endpoint=args.kv_events_replay_endpoint,
                            block_size=args.block_size, dp_size=args.dp_size,
                            lora_modules=tuple(args.lora_modules or ()),
                            max_loras=args.max_loras)
    app = create_app(config)
    try:
        sock = socket.create_server((args.host, args.port))
    except OSError as e:
        raise ConfigError(f"cannot listen on {args.host}:{args.port} ({e.strerror or e}); "
                          "choose another --port") from None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s "
                        "%(message)s")
    model = config.step_model()
    pool = config.capacity or model.kv_pool_tokens
    events = ""
    if args.kv_events_endpoint:
        events = f", KV events on {_ranks_of(args.kv_events_endpoint, config.dp_size)}"
        if args.kv_events_replay_endpoint:
            events += f" (replay {_ranks_of(args.kv_events_replay_endpoint, config.dp_size)})"
    ranks = f" per rank, {config.dp_size} data-parallel ranks" if config.dp_size > 1 else ""
    print(f"kvroute worker: emulated {args.profile} ({name} eviction, KV pool "
          f"{pool:,} tokens{ranks}, speed x{args.speed:g}{events}), listening on "
          f"http://{args.host}:{args.port}", flush=True)
    web.run_app(app, sock=sock, print=None, access_log=None)
    return 0


def _ranks_of(endpoint: str, n: int) -> str:
    """The addresses ``n`` ranks publish on, for the banner."""
    from kvroute.worker.kv_publisher import rank_endpoint

    if n > 1 and endpoint.endswith(":*"):
        return f"{endpoint} (a free port per rank)"
    return ", ".join(rank_endpoint(endpoint, r) for r in range(n))


def add_parser(sub: Any) -> None:
    s = sub.add_parser("worker", help="run an emulated engine (SGLang/vLLM HTTP API)",
                       description=cmd_worker.__doc__)
    s.add_argument("--emulate", action="store_true",
                   help="emulate the engine with the simulator's worker (required)")
    s.add_argument("--profile", default=DEFAULT_PROFILE,
                   help=f"step-time profile name or JSON file; names: "
                        f"{', '.join(profile_names())}")
    s.add_argument("--eviction", default=DEFAULT_EVICTION,
                   help=f"eviction policy, from: {', '.join(EVICTION.names(**ONLINE))}")
    add_arg_flags(s, routing=False)
    s.add_argument("--host", default="127.0.0.1", help="address to listen on")
    s.add_argument("--port", type=int, default=30000, help="port to listen on")
    s.add_argument("--capacity", type=int, help="KV pool in tokens (default: the profile's)")
    s.add_argument("--tokenizer", metavar="PATH",
                   help="tokenizer.json (default: the built-in approximation)")
    s.add_argument("--seed", type=seed, default=1, help="seed of the eviction policy")
    s.add_argument("--speed", type=float, default=1.0,
                   help="divide every step time by this (faster than real time for demos)")
    s.add_argument("--model-name", default="kvroute-emulated",
                   help="model id reported by /v1/models and in responses")
    s.add_argument("--chunk-size", type=int, default=8192, help="chunked-prefill tokens per step")
    s.add_argument("--max-running", type=int, help="cap on running requests")
    s.add_argument("--lora-modules", nargs="+", metavar="NAME",
                   help="LoRA adapters a request may name (OpenAI 'model', SGLang "
                        "'lora_path'), listed by /v1/models; the emulated cache is shared "
                        "by all of them (default: none)")
    s.add_argument("--max-loras", type=int, metavar="N",
                   help="run at most N distinct adapters at once (vLLM's --max-loras: "
                        "reported in /metrics); a request whose adapter finds no slot waits "
                        "while the ones behind it run (default: no cap)")
    s.add_argument("--kv-events-endpoint", metavar="ZMQ",
                   help="publish the cache's changes as vLLM KV events on this ZMQ address, "
                        "e.g. tcp://127.0.0.1:5557 (needs kvroute[events]; default: off)")
    s.add_argument("--kv-events-replay-endpoint", metavar="ZMQ",
                   help="answer replay requests on this address, e.g. tcp://127.0.0.1:5558")
    s.add_argument("--block-size", type=int, default=16,
                   help="tokens per block in the published events")
    s.add_argument("--dp-size", type=dp_size, default=1, metavar="N",
                   help="data parallelism, as vllm serve --data-parallel-size: N independent "
                        "engines (ranks, each with its own cache and a KV pool of "
                        "--capacity) behind the one port; a request goes to the rank its "
                        "X-data-parallel-rank header names, else the one vLLM's balancer "
                        "picks (least 4 x queued + running); /metrics labels each rank's "
                        "series (vLLM's engine=\"r\", SGLang's dp_rank=\"r\"), and rank r "
                        "publishes KV events on the endpoints' port + r")
    s.set_defaults(func=cmd_worker)
