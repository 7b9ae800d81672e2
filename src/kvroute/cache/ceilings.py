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

Memory: the sequences may be token arrays or :class:`kvroute.cache.runs.Runs` (all of one
kind); with runs the trees are :class:`kvroute.cache.runs.RunRadixCache`, which gives the
same hits token for token in memory proportional to the runs. :func:`compact_requests`
encodes a stream of (prompt, insert) pairs as runs while that is at least
``COMPACT_RATIO`` times smaller, as arrays otherwise: the caller never holds every prompt
as tokens (the simulator and ``kvroute compare`` use it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from kvroute.cache.eviction import make_policy
from kvroute.cache.radix import RadixCache, as_tokens
from kvroute.cache.runs import RunRadixCache, Runs
from kvroute.errors import ConfigError

__all__ = ["COMPACT_RATIO", "Ceilings", "ReplayResult", "compact_requests",
           "hit_rate_ceilings", "infinite_hit_rate", "optimal_hit_rate", "replay"]

TokenSeqs = Sequence[Sequence[int] | np.ndarray] | Sequence[Runs]

#: runs are used while the sequences hold at least this many tokens per run (a run costs
#: about 100 bytes of Python objects, a token 8 bytes as int64)
COMPACT_RATIO = 16


def _tree(seqs: TokenSeqs) -> type[RadixCache]:
    return RunRadixCache if len(seqs) and isinstance(seqs[0], Runs) else RadixCache


def compact_requests(pairs: Iterable[tuple[np.ndarray, np.ndarray]]
                     ) -> tuple[list[Runs], list[Runs]] | tuple[list[np.ndarray],
                                                                 list[np.ndarray]]:
    """(prompts, inserts) from a stream of (prompt, insert) token arrays: as
    :class:`Runs` while the runs so far hold at least ``COMPACT_RATIO`` tokens each on
    average, else (from then on, converting what came before) as int64 arrays."""
    prompts: list[Runs] = []
    inserts: list[Runs] = []
    tokens = runs = 0
    it = iter(pairs)
    for prompt, insert in it:
        p, q = Runs.of(prompt), Runs.of(insert)
        prompts.append(p)
        inserts.append(q)
        tokens += len(p) + len(q)
        runs += p.runs + q.runs
        if tokens < COMPACT_RATIO * runs:
            arrays = [r.array() for r in prompts], [r.array() for r in inserts]
            for prompt, insert in it:
                arrays[0].append(as_tokens(prompt))
                arrays[1].append(as_tokens(insert))
            return arrays
    return prompts, inserts


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
        arr = prompt if isinstance(prompt, Runs) else as_tokens(prompt)
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
    cache = _tree(prompts)(capacity, make_policy("lru"), page_size=page_size)
    return replay(cache, prompts, inserts).hit_rate


def optimal_hit_rate(prompts: TokenSeqs, capacity: int, inserts: TokenSeqs | None = None,
                     page_size: int = 1) -> float:
    """Hit rate of the offline optimum with one cache of ``capacity`` tokens."""
    policy = make_policy("optimal", requests=prompts)
    cache = _tree(prompts)(capacity, policy, page_size=page_size)
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
