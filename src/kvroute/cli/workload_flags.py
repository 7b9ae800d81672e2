"""The workload flags shared by ``kvroute sim`` and ``kvroute bench`` (defined once)."""

from __future__ import annotations

import argparse
from typing import Any

from kvroute.errors import ConfigError
from kvroute.sim.load import build_at_load
from kvroute.sim.step_model import StepModel
from kvroute.workloads.catalog import build_workload as build
from kvroute.workloads.gsp import ORDERS
from kvroute.workloads.request import Workload

__all__ = ["add_workload_flags", "build_workload"]

# flags passed through to kvroute.workloads.catalog.build_workload (None: the default)
FLAGS = ("groups", "prompts_per_group", "prefix_ratio", "order", "rate", "output_len", "mode",
         "clients", "think_time", "documents", "questions_per_doc", "block_size", "time_scale",
         "start", "limit")


def add_workload_flags(parser: argparse.ArgumentParser, title: str) -> Any:
    """Add the workload options as a group of ``parser``; return the group."""
    w = parser.add_argument_group(title)
    w.add_argument("--rate", type=float, help="open loop: requests/s (default 12; a trace: "
                   "its own timing unless given)")
    w.add_argument("--load", type=float, metavar="RHO",
                   help="instead of --rate: the rate at which the work offered without cache "
                        "hits is RHO x the cluster's capacity (chat: open loop)")
    w.add_argument("--output-len", type=int, help="output tokens per request (default 4)")
    w.add_argument("--dataset", metavar="PATH",
                   help="ShareGPT/UltraChat or LooGLE file (default: synthetic)")
    w.add_argument("--tokenizer", metavar="PATH",
                   help="tokenizer.json for --dataset (default: built-in)")
    w.add_argument("--groups", type=int, help="gsp: groups (128)")
    w.add_argument("--prompts-per-group", type=int, help="gsp: prompts per group (32)")
    w.add_argument("--prefix-ratio", type=float, help="gsp: shared fraction (0.5)")
    w.add_argument("--order", choices=ORDERS, help="gsp: arrival order (random)")
    w.add_argument("--mode", choices=("closed", "open"), help="chat: loop (closed)")
    w.add_argument("--clients", type=int, help="chat: clients (128)")
    w.add_argument("--think-time", type=float, help="chat closed loop: seconds between turns")
    w.add_argument("--documents", type=int, help="loogle: documents (128)")
    w.add_argument("--questions-per-doc", type=int, help="loogle: questions each (32)")
    w.add_argument("--trace", metavar="PATH", help="mooncake: the trace file (Mooncake or "
                   "Alibaba Bailian JSONL, or a CSV of lengths only: Azure's or BurstGPT's "
                   "columns)")
    w.add_argument("--block-size", type=int,
                   help="mooncake: tokens per block (512; a Bailian trace 16)")
    w.add_argument("--time-scale", type=float,
                   help="mooncake: multiply inter-arrival times (1; in a Bailian trace, of "
                        "the conversations' first turns: later turns keep their own pace)")
    w.add_argument("--start", type=int, help="mooncake: first request to replay (0)")
    w.add_argument("--limit", type=int, help="mooncake: number of requests to replay")
    return w


def build_workload(args: argparse.Namespace, *, model: StepModel | None = None,
                   workers: float | None = None, chunk_size: int = 8192,
                   pool: int | None = None, **extra: Any) -> tuple[Workload, float | None]:
    """The workload named by ``--workload`` (default: ``mooncake`` with ``--trace``, else
    ``gsp``) with the workload flags the user gave, and the
    rate ``--load`` chose (None without it; a load needs the cluster's ``model`` and
    ``workers``)."""
    options = {f: getattr(args, f) for f in FLAGS}
    sources = {"dataset": args.dataset, "trace": args.trace, "tokenizer": args.tokenizer}
    name = args.workload or ("mooncake" if args.trace else "gsp")
    if args.load is None:
        return build(name, args.seed, **sources, **options, **extra), None
    if model is None or workers is None:
        raise ConfigError("--load needs the cluster's step-time profile and worker count")
    options = {k: v for k, v in {**options, **extra}.items() if v is not None}
    return build_at_load(name, args.seed, args.load, model, workers, chunk_size, pool,
                         **{k: v for k, v in sources.items() if v}, **options)
