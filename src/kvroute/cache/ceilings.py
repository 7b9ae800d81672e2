"""Hit-rate ceilings: what no eviction (and, pooled, no routing) policy can beat.

* ``infinite``: every request hits the longest prefix it shares with anything stored
  before it (a cache that never evicts).
* ``optimal``: the offline optimum (tree Belady) for one cache of ``capacity`` tokens;
  for M workers of capacity C, the pooled ceiling is the optimum at M*C: the union of the
  workers' caches always fits in one cache of M*C tokens and is prefix-closed.

Requests are served one at a time: each prompt is matched (its hit counted), then
``inserts[j]`` (default: the prompt itself; pass prompt + output to cache outputs as an
engine does) is stored. Hit rate = sum of hits / sum of prompt tokens. Concurrency only
makes real systems worse (in-flight requests pin paths and share the pool), so these
stay upper bounds for the simulator and for real engines.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from kvroute.cache.eviction import make_policy
from kvroute.cache.radix import RadixCache, as_tokens
from kvroute.errors import ConfigError

__all__ = ["Ceilings", "ReplayResult", "hit_rate_ceilings", "infinite_hit_rate",
           "optimal_hit_rate", "replay"]

TokenSeqs = Sequence[Sequence[int] | np.ndarray]


@dataclass(frozen=True)
class ReplayResult:
    requests: int
    prompt_tokens: int
    hit_tokens: int
    evicted_tokens: int

    @property
    def hit_rate(self) -> float:
        return self.hit_tokens / self.prompt_tokens if self.prompt_tokens else 0.0


def replay(cache: RadixCache, prompts: TokenSeqs, inserts: TokenSeqs | None = None,
           progress: Callable[[int], None] | None = None) -> ReplayResult:
    """Serve ``prompts`` one at a time through ``cache`` (clock = request index)."""
    if inserts is not None and len(inserts) != len(prompts):
        raise ConfigError(f"{len(inserts)} inserts for {len(prompts)} prompts")
    hits = total = stored = 0
    start_total = cache.total
    for j, prompt in enumerate(prompts):
        arr = as_tokens(prompt)
        hits += cache.match(arr, now=j).hit
        total += len(arr)
        stored += cache.insert(arr if inserts is None else inserts[j], now=j)
        if progress is not None:
            progress(j + 1)
    evicted = start_total + stored - cache.total
    return ReplayResult(len(prompts), total, hits, evicted)


def infinite_hit_rate(prompts: TokenSeqs, inserts: TokenSeqs | None = None,
                      page_size: int = 1) -> float:
    """Hit rate of a cache that never evicts."""
    stored = inserts if inserts is not None else prompts
    capacity = sum(len(s) for s in stored) + 1
    cache = RadixCache(capacity, make_policy("lru"), page_size=page_size)
    return replay(cache, prompts, inserts).hit_rate


def optimal_hit_rate(prompts: TokenSeqs, capacity: int, inserts: TokenSeqs | None = None,
                     page_size: int = 1) -> float:
    """Hit rate of the offline optimum with one cache of ``capacity`` tokens."""
    policy = make_policy("optimal", requests=prompts)
    cache = RadixCache(capacity, policy, page_size=page_size)
    return replay(cache, prompts, inserts).hit_rate


@dataclass(frozen=True)
class Ceilings:
    infinite: float  # no policy, no routing beats it
    optimal: float  # offline optimum at capacity * workers (the pooled ceiling)
    capacity: int
    workers: int


def hit_rate_ceilings(prompts: TokenSeqs, capacity: int, workers: int = 1,
                      inserts: TokenSeqs | None = None, page_size: int = 1) -> Ceilings:
    """The infinite-cache ceiling and the (pooled) optimum for M workers of ``capacity``."""
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    return Ceilings(
        infinite=infinite_hit_rate(prompts, inserts, page_size),
        optimal=optimal_hit_rate(prompts, capacity * workers, inserts, page_size),
        capacity=capacity, workers=workers)
