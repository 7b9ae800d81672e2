"""``kvroute worker --emulate``: an HTTP engine (SGLang / vLLM API) whose model is the
simulator's worker running in real time."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from kvroute.cache import policy_names
from kvroute.errors import ConfigError
from kvroute.sim.step_model import DEFAULT_PROFILE, profile_names

__all__ = ["add_parser", "cmd_worker"]


def cmd_worker(args: argparse.Namespace) -> int:
    """Serve SGLang's and vLLM's HTTP API with an emulated engine: the simulator's worker
    (scheduler, radix cache, eviction policy, step-time profile) in real time."""
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
    config = EmulatedConfig(profile=args.profile, eviction=args.eviction,
                            capacity=args.capacity, tokenizer=args.tokenizer, seed=args.seed,
                            speed=args.speed, model_name=args.model_name,
                            chunk_size=args.chunk_size, max_running=args.max_running)
    app = create_app(config)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s "
                        "%(message)s")
    model = config.step_model()
    pool = config.capacity or model.kv_pool_tokens
    print(f"kvroute worker: emulated {args.profile} ({args.eviction} eviction, KV pool "
          f"{pool:,} tokens, speed x{args.speed:g}), listening on "
          f"http://{args.host}:{args.port}", flush=True)
    web.run_app(app, host=args.host, port=args.port, print=None, access_log=None)
    return 0


def add_parser(sub: Any) -> None:
    s = sub.add_parser("worker", help="run an emulated engine (SGLang/vLLM HTTP API)",
                       description=cmd_worker.__doc__,
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    s.add_argument("--emulate", action="store_true",
                   help="emulate the engine with the simulator's worker (required)")
    s.add_argument("--profile", default=DEFAULT_PROFILE,
                   help=f"step-time profile name or JSON file; names: "
                        f"{', '.join(profile_names())}")
    s.add_argument("--eviction", default="lru",
                   help="eviction policy, from: "
                        f"{', '.join(p for p in policy_names() if p != 'optimal')}")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=30000)
    s.add_argument("--capacity", type=int, help="KV pool in tokens (default: the profile's)")
    s.add_argument("--tokenizer", metavar="PATH",
                   help="tokenizer.json (default: the built-in approximation)")
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--speed", type=float, default=1.0,
                   help="divide every step time by this (faster than real time for demos)")
    s.add_argument("--model-name", default="kvroute-emulated",
                   help="model id reported by /v1/models and in responses")
    s.add_argument("--chunk-size", type=int, default=8192, help="chunked-prefill tokens per step")
    s.add_argument("--max-running", type=int, help="cap on running requests")
    s.set_defaults(func=cmd_worker)
