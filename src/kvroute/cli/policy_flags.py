"""The command-line flags that choose policies and set their parameters, for every command.

``--routing``/``--policy`` and ``--eviction`` take names from the registries (filtered by
the capability the command needs: the live router cannot run a policy that
``needs_probes``, a worker cannot run one that ``needs_future``); ``--policy-arg
[POLICY.]KEY=VALUE`` and ``--eviction-arg [POLICY.]KEY=VALUE`` set parameters, checked by
the policy before any work starts.
"""

from __future__ import annotations

import argparse
from typing import Any

from kvroute.cache.eviction.registry import EVICTION
from kvroute.errors import ConfigError
from kvroute.registry import Registry, parse_policy_args
from kvroute.routing.registry import ROUTING

__all__ = ["DEFAULT_EVICTION", "DEFAULT_ROUTING", "ONLINE", "ONLINE_ROUTING", "SIMULATED",
           "add_arg_flags", "add_index_flags", "choose", "eviction_args", "routing_args",
           "seed"]

DEFAULT_EVICTION = "rlt"  # every command's default eviction policy
DEFAULT_ROUTING = "learned"  # sim, serve and up (measured: docs/routing-results.md)

# What each place can run: the capabilities its policies must have.
ONLINE_ROUTING: dict[str, Any] = {"needs_probes": False}  # the live router
ONLINE: dict[str, Any] = {"needs_future": False}  # eviction on any worker, simulated or live
SIMULATED: dict[str, Any] = {}  # routing in the simulator: anything


def seed(text: str) -> int:
    """An argparse type: a seed is an integer >= 0 (what numpy's generators take)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"a seed is an integer >= 0, got {text.strip()!r}")
    return value


def add_arg_flags(parser: argparse.ArgumentParser | Any, routing: bool = True,
                  eviction: bool = True) -> None:
    """``--policy-arg`` and/or ``--eviction-arg``, repeatable."""
    if routing:
        parser.add_argument(
            "--policy-arg", action="append", default=[], metavar="[POLICY.]KEY=VALUE",
            help="a routing-policy parameter, e.g. cache_threshold=0.3 (repeat for more; "
                 "POLICY. limits it to one policy)")
    if eviction:
        parser.add_argument(
            "--eviction-arg", action="append", default=[], metavar="[POLICY.]KEY=VALUE",
            help="an eviction-policy parameter (repeat for more; POLICY. limits it to one "
                 "policy)")


def add_index_flags(parser: argparse.ArgumentParser | Any, both: bool) -> None:
    """The simulated router's prefix index: ``--index`` (``both``: ``approx,exact`` runs
    each), ``--event-delay`` and ``--event-block-size`` (SimConfig's ``index``,
    ``event_delay``, ``block_size``)."""
    parser.add_argument(
        "--index", default="approx", metavar="approx|exact" + (",..." if both else ""),
        choices=None if both else ("approx", "exact"),
        help="the router's prefix index: approx (learned from routing history) or exact (the "
             "workers' KV-cache events; needs kvroute[events])"
             + ("; 'approx,exact' runs both" if both else "; in every run"))
    parser.add_argument("--event-delay", type=float, default=0.0, metavar="S",
                        help="--index exact: seconds of simulated time before a cache event "
                             "reaches the router")
    parser.add_argument("--event-block-size", type=int, default=16,
                        help="--index exact: tokens per block in the workers' events")


def add_told_flags(parser: argparse.ArgumentParser | Any) -> None:
    """What the simulated router is told: ``--max-tokens`` (each request's output),
    ``--no-cached-report`` and ``--stream-share`` (SimConfig's ``max_tokens``,
    ``report_cached`` and ``stream_share``)."""
    parser.add_argument(
        "--max-tokens", default="exact", metavar="exact|none|N",
        help="what clients send as max_tokens: each request's output length (exact, the "
             "default: benchmark clients with ignore_eos), nothing (none: chat clients "
             "that omit it; no policy then knows how long a request decodes) or a cap of N "
             "tokens (most chat clients: the output ends far below it; raised to a "
             "request's output where that is longer)")
    parser.add_argument(
        "--no-cached-report", dest="report_cached", action="store_false",
        help="the workers report no cached tokens with a completion, as vLLM without "
             "--enable-prompt-tokens-details and SGLang's OpenAI API without "
             "--enable-cache-report (their defaults)")
    parser.add_argument(
        "--stream-share", type=float, default=1.0, metavar="S",
        help="the share of requests that stream (default 1); of the others the router "
             "sees no first token (no TTFT; the request counts as prefilling until it "
             "completes), only the completion: 0 for clients that never stream")


def add_engine_flags(parser: argparse.ArgumentParser | Any) -> None:
    """How the simulated engines schedule: ``--chunk-size``, ``--max-running``,
    ``--mixed-chunk`` and ``--max-loras`` (SimConfig's ``chunk_size``, ``max_running``,
    ``mixed_chunk`` and ``max_loras``), the LoRA adapters requests are for: ``--adapters``
    (``adapters``), and how many routers share them: ``--router-replicas``
    (``router_replicas``)."""
    parser.add_argument("--chunk-size", type=int, default=8192,
                        help="chunked-prefill tokens per step")
    parser.add_argument("--max-running", type=int, help="cap on running requests per worker")
    parser.add_argument("--mixed-chunk", action="store_true",
                        help="run decodes in the same step as prefill chunks (as vLLM does; "
                             "default: prefill steps first, as SGLang)")
    parser.add_argument("--adapters", type=int, default=0, metavar="N",
                        help="each request is for one of N LoRA adapters (by its first 64 "
                             "tokens: a tenant's prompts share one; Zipf popularity; "
                             "default 0: the base model only)")
    parser.add_argument("--max-loras", type=int, metavar="N",
                        help="distinct LoRA adapters a worker runs at once (vLLM "
                             "--max-loras, SGLang --max-loras-per-batch); a request whose "
                             "adapter finds no slot waits (default: no limit)")
    parser.add_argument("--router-replicas", type=int, default=1, metavar="R",
                        help="R independent routers share the workers, requests to them in "
                             "turn, each counting only its own (replicas behind a load "
                             "balancer; default 1; tell learned with --policy-arg "
                             "learned.replicas=R)")


def choose(registry: Registry[Any], text: str, where: str,
           capabilities: dict[str, Any]) -> list[str]:
    """Comma-separated policy names, each known and able to run ``where``."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise ConfigError(f"no {registry.kind} given; choose from: "
                          f"{', '.join(registry.names(**capabilities))}")
    for name in names:
        registry.require(name, where, **capabilities)
    return names


def routing_args(args: argparse.Namespace, names: list[str]) -> dict[str, dict[str, str]]:
    return _args_for(ROUTING, names, args.policy_arg, "--policy-arg")


def eviction_args(args: argparse.Namespace, names: list[str]) -> dict[str, dict[str, str]]:
    return _args_for(EVICTION, names, args.eviction_arg, "--eviction-arg")


def _args_for(registry: Registry[Any], names: list[str], items: list[str],
              flag: str) -> dict[str, dict[str, str]]:
    per_policy = registry.args_for(names, parse_policy_args(items, flag), flag)
    for name, params in per_policy.items():  # the policy checks its values now, not mid-run
        if not getattr(registry.get(name), "needs_future", False):  # built later, with it
            registry.make(name, params, seed=0)
    return per_policy
