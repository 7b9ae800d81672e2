"""Prompt streams for one-cache replay (``kvroute cache``), from a workload or a trace.

A :class:`CacheStream` is the prompts in serving order as 1-D int64 arrays of *units*,
the number of distinct units (the base of ``N%`` capacities) and a suggested capacity.

* ``trace_stream(path, unit)``: a Mooncake or Bailian trace (block size: the file's
  layout's default, :mod:`~kvroute.workloads.mooncake`, unless given).
  ``unit="block"``: each hash id is one unit (the prompt is its ``hash_ids``);
  ``unit="token"``: each block expands to ``block_size`` token ids, cut to
  ``input_length`` (:func:`block_tokens`). In a Bailian trace a turn whose continuation
  is in the file (:mod:`~kvroute.workloads.mooncake`) leaves its reply in the cache as
  well (``inserts``): in blocks, its whole blocks then the continuation's whole blocks
  up to the end of the reply (a partial block is not cached, as on vLLM); in tokens, the
  continuation's ids up to the end of the reply (its prompt the continuation's ids up to
  its length, as the simulator's).
* ``workload_stream(name, seed, **options)``: ``gsp`` (its prompts), ``sharegpt`` and
  ``loogle`` (the synthetic generators' prompts, in arrival order) and ``adversarial``
  (:mod:`kvroute.workloads.adversarial`, with its own capacity); units are tokens.

:func:`parse_capacities` turns ``"1%,5%,12500"`` into unit counts.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kvroute.errors import ConfigError
from kvroute.workloads.adversarial import AdversarialConfig, adversarial_cycle
from kvroute.workloads.mooncake import read_trace, trace_name, turn_tokens

__all__ = ["STREAM_WORKLOADS", "UNITS", "CacheStream", "parse_capacities", "trace_stream",
           "workload_stream"]

UNITS = ("block", "token")
STREAM_WORKLOADS = ("gsp", "sharegpt", "loogle", "adversarial")


@dataclass(frozen=True)
class CacheStream:
    name: str
    unit: str  # what one id stands for: "token" or "block"
    prompts: list[np.ndarray] = field(repr=False)
    unique_units: int
    capacity: int | None = None  # the capacity the stream is built for, if any
    meta: dict[str, Any] = field(default_factory=dict)
    # what each request leaves in the cache, where that is more than its prompt (a
    # Bailian trace's turn: its prompt and its reply); None: the prompts
    inserts: list[np.ndarray] | None = field(default=None, repr=False)

    @property
    def units(self) -> int:
        return sum(len(p) for p in self.prompts)


def _unique(prompts: list[np.ndarray]) -> int:
    """Distinct units, prefix-closed (a unit is identified with its whole prefix): what a
    cache that never evicts ends up holding, given what is stored (the prompts, or the
    inserts)."""
    from kvroute.cache.eviction import make_policy
    from kvroute.cache.radix import RadixCache
    cache = RadixCache(sum(len(p) for p in prompts) + 1, make_policy("lru"))
    return sum(cache.insert(p) for p in prompts)


def trace_stream(path: str | os.PathLike[str], unit: str = "block",
                 block_size: int | None = None) -> CacheStream:
    if unit not in UNITS:
        raise ConfigError(f"--unit must be one of {', '.join(UNITS)}, got {unit!r}")
    trace = read_trace(path, block_size)
    block_size = trace.block_size
    records = sorted(trace.records, key=lambda r: r.timestamp)
    by_line = trace.by_line()
    prompts, inserts = [], []
    for r in records:
        c = by_line.get(r.continued_by)
        if unit == "block":
            prompt = np.asarray(r.hash_ids, dtype=np.int64)
            whole = r.input_length // block_size  # then the continuation's whole blocks
            stored = prompt if c is None else np.concatenate([  # to the reply's end
                prompt[:whole], c.hash_ids[whole:(r.input_length + r.output_length)
                                           // block_size]])
        else:
            prompt, reply = turn_tokens(r, c, block_size)
            stored = prompt if reply is None else np.concatenate([prompt, reply])
        prompts.append(prompt)
        inserts.append(stored)
    replies = sum(1 for r in records if r.continued_by)
    return CacheStream(trace_name(path), unit, prompts, _unique(inserts),
                       meta={"path": os.fspath(path), "block_size": block_size,
                             **({"replies_stored": replies} if replies else {})},
                       inserts=inserts if replies else None)


def workload_stream(name: str, seed: int = 1, **options: Any) -> CacheStream:
    if name not in STREAM_WORKLOADS:
        raise ConfigError(f"unknown stream workload {name!r}; choose from: "
                          f"{', '.join(STREAM_WORKLOADS)} (or --trace FILE)")
    opts = {k: v for k, v in options.items() if v is not None}
    capacity = None
    if name == "adversarial":
        cfg = AdversarialConfig(seed=seed, **opts)
        prompts = adversarial_cycle(cfg)
        capacity = cfg.capacity
        meta: dict[str, Any] = {k: getattr(cfg, k) for k in cfg.__dataclass_fields__}
    elif name == "gsp":
        from kvroute.workloads.gsp import GSPConfig, generate_gsp
        gcfg = GSPConfig(seed=seed, **opts)
        prompts = generate_gsp(gcfg).prompts
        meta = {k: getattr(gcfg, k) for k in gcfg.__dataclass_fields__}
    else:
        from kvroute.workloads.catalog import build_workload
        work = build_workload(name, seed, **opts)
        prompts = [np.asarray(r.tokens, dtype=np.int64) for r in work]
        meta = {"seed": seed, **opts}
    return CacheStream(name, "token", list(prompts), _unique(list(prompts)), capacity, meta)


def parse_capacities(text: str, unique_units: int) -> list[int]:
    """``"1%,5%,12500"`` -> unit counts (``N%`` of ``unique_units``, rounded, at least 1)."""
    out = []
    for item in (s.strip() for s in str(text).split(",")):
        if not item:
            continue
        try:
            if item.endswith("%"):
                pct = float(item[:-1])
                if not (pct > 0 and math.isfinite(pct)):
                    raise ValueError
                out.append(max(1, round(unique_units * pct / 100)))
            else:
                n = int(item.replace("_", ""))
                if n < 0:
                    raise ValueError
                out.append(n)
        except ValueError:
            raise ConfigError(f"capacity must be a non-negative integer or N% (N a finite "
                              f"number > 0), got {item!r}") from None
    if not out:
        raise ConfigError("no capacity given")
    return out
