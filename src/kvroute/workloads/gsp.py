"""GSP, the generated-shared-prefix workload of the paper (paper.md section 7).

Group g has total length ``L_g = lengths[g % len(lengths)]``: a system prompt of
``round(prefix_ratio * L_g)`` tokens shared by the whole group, a separator (the single
Llama-3 token for "\\n\\n") and a fresh random question filling the rest, so every prompt
is exactly ``L_g`` tokens. Token ids are uniform over ``vocab_size``. Orders: ``random``
(one global shuffle of the grouped list, as the paper's harness does it: SGLang's
bench_serving with Python's ``random.Random(seed).shuffle``), ``grouped`` (group by
group) and ``round_robin`` (the i-th prompt of every group, then the (i+1)-th). Defaults
are the paper's: 128 groups x 32 prompts, lengths 512..8192, ratio 0.5, seed 1: 4,096
prompts, 12.81M tokens.
:func:`gsp_workload` turns the stream into requests: 4 output tokens each, Poisson
arrivals at 12 requests/s (the paper's benchmark), seeded separately from the prompts so
that changing the rate keeps the same prompts.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from kvroute.errors import ConfigError
from kvroute.workloads.request import OpenLoop, Request, poisson_arrivals

__all__ = ["GSPConfig", "GSPStream", "generate_gsp", "gsp_workload"]

Order = Literal["random", "grouped", "round_robin"]
ORDERS: tuple[Order, ...] = ("random", "grouped", "round_robin")
SEPARATOR = np.array([271], dtype=np.int64)  # "\n\n" in the Llama-3 tokenizer


@dataclass(frozen=True)
class GSPConfig:
    groups: int = 128
    prompts_per_group: int = 32
    prefix_ratio: float = 0.5
    lengths: tuple[int, ...] = (512, 1024, 2048, 4096, 8192)
    order: Order = "random"
    vocab_size: int = 128_256
    seed: int = 1

    def __post_init__(self) -> None:
        if self.groups < 1 or self.prompts_per_group < 1:
            raise ConfigError("groups and prompts_per_group must be >= 1")
        if not 0.0 <= self.prefix_ratio <= 1.0:
            raise ConfigError(f"prefix_ratio must be in [0, 1], got {self.prefix_ratio}")
        if not self.lengths or min(self.lengths) < 2:
            raise ConfigError(f"lengths must be >= 2 tokens each, got {self.lengths}")
        if self.order not in ORDERS:
            raise ConfigError(f"order must be one of {', '.join(ORDERS)}, got {self.order!r}")
        if self.vocab_size < 2:
            raise ConfigError("vocab_size must be >= 2")


@dataclass(frozen=True)
class GSPStream:
    config: GSPConfig
    prompts: list[np.ndarray] = field(repr=False)
    groups: np.ndarray = field(repr=False)  # group id of each prompt, in stream order

    @property
    def prompt_tokens(self) -> int:
        return sum(len(p) for p in self.prompts)


def generate_gsp(config: GSPConfig | None = None) -> GSPStream:
    """The GSP prompts as token-id arrays, in the configured order (seeded)."""
    cfg = config or GSPConfig()
    rng = np.random.default_rng(cfg.seed)
    table: list[list[np.ndarray]] = []
    for g in range(cfg.groups):
        total = cfg.lengths[g % len(cfg.lengths)]
        n_sys = min(round(cfg.prefix_ratio * total), total - 1)
        system = rng.integers(0, cfg.vocab_size, size=n_sys, dtype=np.int64)
        n_q = total - n_sys - len(SEPARATOR)
        table.append([
            np.concatenate([system, SEPARATOR,
                            rng.integers(0, cfg.vocab_size, size=max(n_q, 0), dtype=np.int64)])
            [:total]
            for _ in range(cfg.prompts_per_group)])
    pairs = [(g, i) for g in range(cfg.groups) for i in range(cfg.prompts_per_group)]
    if cfg.order == "round_robin":
        pairs.sort(key=lambda gi: (gi[1], gi[0]))
    elif cfg.order == "random":  # the paper's harness: SGLang's bench_serving, seeded
        random.Random(cfg.seed).shuffle(pairs)
    return GSPStream(cfg, [table[g][i] for g, i in pairs],
                     np.array([g for g, _ in pairs], dtype=np.int64))


def gsp_workload(config: GSPConfig | None = None, rate: float = 12.0,
                 output_len: int = 4) -> OpenLoop:
    """GSP as requests: ``output_len`` tokens each, Poisson arrivals at ``rate`` per second."""
    stream = generate_gsp(config)
    cfg = stream.config
    arrivals = poisson_arrivals(len(stream.prompts), rate,
                                np.random.default_rng([cfg.seed, 0x65_7370]))
    rows = zip(stream.prompts, arrivals, stream.groups, strict=True)
    reqs = [Request(rid=i, tokens=p, output_len=output_len, arrival=float(t), session=int(g))
            for i, (p, t, g) in enumerate(rows)]
    return OpenLoop.of("gsp", reqs, order=cfg.order, groups=cfg.groups,
                       prompts_per_group=cfg.prompts_per_group, prefix_ratio=cfg.prefix_ratio,
                       rate=rate, output_len=output_len, seed=cfg.seed)
