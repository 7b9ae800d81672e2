"""One-cache replay of a prompt stream at several capacities, every policy side by side.

``replay_grid(prompts, capacities, policies, ...)`` returns, for each capacity, the
ceilings (``infinite``: a cache that never evicts; ``optimal``: the offline optimum at
capacity x ``workers``) and one row per policy: hit rate, hit and evicted units, seconds.
Each policy gets a fresh cache and a fresh policy object per capacity, built by the
registry with ``seed``; a policy that ``needs_future`` is built from ``prompts``.
Requests are served one at a time with the request index as the clock
(:func:`kvroute.cache.ceilings.replay`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from kvroute.cache.ceilings import TokenSeqs, infinite_hit_rate, optimal_hit_rate, replay
from kvroute.cache.eviction.registry import EVICTION, make_policy
from kvroute.cache.radix import RadixCache
from kvroute.errors import ConfigError

__all__ = ["replay_grid"]


def replay_grid(prompts: TokenSeqs, capacities: Sequence[int], policies: Sequence[str], *,
                params: Mapping[str, Mapping[str, Any]] | None = None, seed: int = 1,
                page_size: int = 1, workers: int = 1,
                progress: Callable[[str, int], None] | None = None,
                inserts: TokenSeqs | None = None) -> list[dict[str, Any]]:
    """For each capacity: ``{"capacity", "ceilings": {...}, "policies": [rows]}``.
    ``inserts``: what each request stores, when more than its prompt (its reply)."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers must be an integer >= 1, got {workers!r}")
    infinite = infinite_hit_rate(prompts, inserts, page_size=page_size)
    out = []
    for cap in capacities:
        optimal = optimal_hit_rate(prompts, cap * workers, inserts, page_size=page_size)
        rows = []
        for name in policies:
            cls = EVICTION.get(name)
            future = {"requests": prompts} if cls.needs_future else {}
            policy = make_policy(name, (params or {}).get(name, {}), seed=seed, **future)
            cache = RadixCache(cap, policy, page_size=page_size)
            start = time.perf_counter()
            def step(j: int, name: str = name) -> None:
                if progress is not None:
                    progress(name, j)

            result = replay(cache, prompts, inserts, progress=step if progress else None)
            rows.append({"policy": name, "hit_rate": result.hit_rate,
                         "hit_units": result.hit_tokens,
                         "evicted_units": result.evicted_tokens,
                         "seconds": time.perf_counter() - start})
        out.append({"capacity": cap,
                    "ceilings": {"infinite": infinite, "optimal": optimal,
                                 "optimal_capacity": cap * workers},
                    "policies": rows})
    return out
