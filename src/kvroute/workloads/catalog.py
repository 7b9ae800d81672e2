"""Workloads by name, with options checked against each workload's own config fields.

``build_workload("gsp", seed=2, order="grouped", rate=8)`` and friends; the command line
and the comparison grid both build workloads here, so every name and option is defined
once. An unknown option is an error that lists the valid ones.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
from dataclasses import fields
from typing import Any

from kvroute.errors import ConfigError, UnknownNameError
from kvroute.workloads.chat import ChatConfig, load_sharegpt, synthetic_chat
from kvroute.workloads.gsp import GSPConfig, gsp_workload
from kvroute.workloads.loogle import LoogleConfig, load_loogle, synthetic_loogle
from kvroute.workloads.mooncake import load_mooncake
from kvroute.workloads.request import Workload
from kvroute.workloads.tokenizer import load_tokenizer

__all__ = ["WORKLOAD_NAMES", "build_workload"]


# the options that are not config fields: arguments of the workload builders
_EXTRA_TYPES: dict[str, Any] = {"rate": float, "output_len": int, "block_size": int,
                                "time_scale": float, "start": int, "limit": int}


def _check_type(name: str, key: str, value: Any, hint: Any) -> None:
    """``value`` has the type ``hint`` allows (options from ``compare -o`` arrive as parsed
    JSON, or as the raw text when it is not JSON): a one-line error, not a TypeError deep
    in a generator."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType) and len(args) == 1:
        hint, args, origin = args[0], list(typing.get_args(args[0])), typing.get_origin(args[0])
    if origin is typing.Literal:
        ok, what = value in args, f"one of {', '.join(map(str, args))}"
    elif origin is tuple:
        ok = isinstance(value, tuple | list) and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value)
        what = "a list of integers, e.g. [512,1024]"
    elif hint is int:
        ok, what = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif hint is float:
        ok, what = isinstance(value, int | float) and not isinstance(value, bool), "a number"
    else:
        return
    if not ok:
        raise ConfigError(f"workload {name}: option {key} must be {what}, got {value!r}")


def _split(name: str, cls: type, options: dict[str, Any], extra: tuple[str, ...] = ()
           ) -> tuple[dict[str, Any], dict[str, Any]]:
    own = {f.name for f in fields(cls)} - {"seed"}
    bad = set(options) - own - set(extra)
    if bad:
        raise ConfigError(f"unknown option(s) {', '.join(sorted(bad))} for workload {name}; "
                          f"valid: {', '.join(sorted(own | set(extra)))}")
    hints = typing.get_type_hints(cls)
    for key, value in options.items():
        _check_type(name, key, value, _EXTRA_TYPES[key] if key in extra else hints[key])
    return ({k: v for k, v in options.items() if k in own},
            {k: v for k, v in options.items() if k in extra})


def _gsp(name: str, seed: int, src: dict[str, Any], opts: dict[str, Any]) -> Workload:
    cfg, extra = _split(name, GSPConfig, opts, ("rate", "output_len"))
    return gsp_workload(GSPConfig(seed=seed, **cfg), **extra)


def _chat(name: str, seed: int, src: dict[str, Any], opts: dict[str, Any]) -> Workload:
    if opts.get("rate") is not None and opts.get("mode", "closed") != "open":
        raise ConfigError("rate applies to the open loop (mode open); the closed loop is paced "
                          "by its concurrency")
    cfg = ChatConfig(seed=seed, **_split(name, ChatConfig, opts)[0])
    if src.get("dataset"):
        return load_sharegpt(src["dataset"], cfg, load_tokenizer(src.get("tokenizer")), name)
    return synthetic_chat(cfg, name)


def _loogle(name: str, seed: int, src: dict[str, Any], opts: dict[str, Any]) -> Workload:
    cfg = LoogleConfig(seed=seed, **_split(name, LoogleConfig, opts)[0])
    if src.get("dataset"):
        return load_loogle(src["dataset"], cfg, load_tokenizer(src.get("tokenizer")))
    return synthetic_loogle(cfg)


def _mooncake(name: str, seed: int, src: dict[str, Any], opts: dict[str, Any]) -> Workload:
    if not src.get("trace"):
        raise ConfigError("the mooncake workload replays a trace: pass --trace FILE.jsonl "
                          "(Mooncake format: timestamp, input_length, output_length, hash_ids)")
    valid = {"block_size", "time_scale", "rate", "start", "limit"}
    bad = set(opts) - valid
    if bad:
        why = " (a trace has its own output lengths)" if "output_len" in bad else ""
        raise ConfigError(f"unknown option(s) {', '.join(sorted(bad))} for workload "
                          f"mooncake{why}; valid: {', '.join(sorted(valid))}")
    for key, value in opts.items():
        _check_type(name, key, value, _EXTRA_TYPES[key])
    return load_mooncake(src["trace"], **opts)


_BUILDERS: dict[str, Callable[[str, int, dict[str, Any], dict[str, Any]], Workload]] = {
    "gsp": _gsp, "sharegpt": _chat, "ultrachat": _chat, "loogle": _loogle,
    "mooncake": _mooncake}
WORKLOAD_NAMES = tuple(_BUILDERS)


def build_workload(name: str, seed: int = 1, *, dataset: str | None = None,
                   trace: str | None = None, tokenizer: str | None = None,
                   **options: Any) -> Workload:
    """The workload ``name`` with ``options`` (None values are ignored: defaults apply)."""
    if name not in _BUILDERS:
        raise UnknownNameError(f"unknown workload {name!r}; choose from: "
                               f"{', '.join(WORKLOAD_NAMES)}")
    if dataset and name not in ("sharegpt", "ultrachat", "loogle"):
        raise ConfigError(f"a dataset file applies to sharegpt, ultrachat and loogle, not {name}")
    if trace and name != "mooncake":
        raise ConfigError(f"a trace file applies to the mooncake workload, not {name}")
    if tokenizer and not dataset:
        raise ConfigError("a tokenizer applies to a dataset file (--dataset): synthetic "
                          "workloads and traces are token ids already")
    src = {k: v for k, v in (("dataset", dataset), ("trace", trace), ("tokenizer", tokenizer))
           if v}
    opts = {k: v for k, v in options.items() if v is not None}
    return _BUILDERS[name](name, seed, src, opts)
