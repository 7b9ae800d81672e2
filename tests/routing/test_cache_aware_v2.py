"""cache_aware_v2 (today's SGLang router): new defaults, misses to the least-loaded worker."""

from __future__ import annotations

import numpy as np
import pytest

from kvroute.errors import ConfigError
from kvroute.routing.base import ClusterView, RouteRequest, WorkerState
from kvroute.routing.cache_aware import CacheAware
from kvroute.routing.cache_aware_v2 import CacheAwareV2
from kvroute.routing.prefix_index import PrefixIndex
from kvroute.routing.registry import make_router_policy


def view(loads: list[int], prompts: dict[int, list[list[int]]] | None = None,
         routed: list[int] | None = None) -> ClusterView:
    index = PrefixIndex(len(loads))
    for w, ps in (prompts or {}).items():
        for p in ps:
            index.record(w, np.array(p, dtype=np.int64), 0.0)
    routed = routed or [0] * len(loads)
    return ClusterView([WorkerState(i, in_flight=x, routed=r)
                        for i, (x, r) in enumerate(zip(loads, routed, strict=True))], index)


def route(pol: CacheAware, v: ClusterView, units: list[int]) -> tuple[int, str]:
    d = pol.route(RouteRequest(np.array(units, dtype=np.int64)), v)
    return d.worker, d.branch


def test_defaults_and_registry() -> None:
    """Defaults 0.3 / 64 / 1.5; registered as 'cache_aware_v2', a CacheAware using the index."""
    pol = make_router_policy("cache_aware_v2")
    assert isinstance(pol, CacheAwareV2) and isinstance(pol, CacheAware) and pol.uses_index
    assert (pol.cache_threshold, pol.balance_abs_threshold, pol.balance_rel_threshold) == (
        0.3, 64, 1.5)


def test_miss_goes_to_least_loaded_not_smallest_tree() -> None:
    """Loads [3, 1, 2], w0's tree empty, w1's large: v1 picks w0 (tree), v2 picks w1 (load)."""
    prompts = {1: [list(range(100, 150))], 2: [[7, 8]]}
    assert route(CacheAware(), view([3, 1, 2], prompts), [1, 2, 3]) == (0, "miss")
    assert route(CacheAwareV2(), view([3, 1, 2], prompts), [1, 2, 3]) == (1, "miss")


def test_miss_tie_break_fewest_routed_then_index() -> None:
    """Loads [1, 1, 2] routed [5, 3, 0] -> w1; loads [1, 1] routed [2, 2] -> w0."""
    assert route(CacheAwareV2(), view([1, 1, 2], routed=[5, 3, 0]), [4]) == (1, "miss")
    assert route(CacheAwareV2(), view([1, 1], routed=[2, 2]), [4]) == (0, "miss")


def test_lower_cache_threshold() -> None:
    """7 of 20 matched (0.35): a hit for v2 (> 0.3), a miss for v1 (<= 0.5); 3 of 10 is no hit."""
    prompt = list(range(1, 21))
    prompts = {2: [prompt[:7]]}
    assert route(CacheAwareV2(), view([0, 0, 0], prompts), prompt) == (2, "hit")
    assert route(CacheAware(), view([0, 0, 0], prompts), prompt) == (0, "miss")
    assert route(CacheAwareV2(), view([0, 1, 0], {2: [prompt[:3]]}), prompt[:10]) == (
        0, "miss")


def test_balance_thresholds() -> None:
    """Spread 64 is balanced, 70 (vs 0) is not; [190, 130] fails 190 > 1.5*130 = 195."""
    prompts = {0: [[1, 2, 3, 4]]}
    assert route(CacheAwareV2(), view([64, 0], prompts), [1, 2, 3, 4]) == (0, "hit")
    assert route(CacheAwareV2(), view([70, 0], prompts), [1, 2, 3, 4]) == (1, "balance")
    assert route(CacheAwareV2(), view([190, 130], prompts), [1, 2, 3, 4]) == (0, "hit")
    assert route(CacheAwareV2(), view([200, 130], prompts), [1, 2, 3, 4]) == (1, "balance")


def test_bad_parameters_raise() -> None:
    """Validation is inherited, with the v2 name in the message."""
    with pytest.raises(ConfigError, match="cache_aware_v2: cache_threshold"):
        CacheAwareV2(cache_threshold=2.0)
