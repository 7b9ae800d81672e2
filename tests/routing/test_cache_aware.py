"""cache_aware (SGLang 0.4.6): balance / hit / miss-to-smallest-tree, and its threshold edges."""

from __future__ import annotations

import numpy as np
import pytest

from kvroute.errors import ConfigError
from kvroute.routing.base import ClusterView, RouteRequest, WorkerState
from kvroute.routing.cache_aware import CacheAware
from kvroute.routing.prefix_index import PrefixIndex
from kvroute.routing.registry import make_router_policy


def view(loads: list[int], prompts: dict[int, list[list[int]]] | None = None) -> ClusterView:
    """Workers with the given in-flight counts; ``prompts[w]`` recorded under worker w."""
    index = PrefixIndex(len(loads))
    for w, ps in (prompts or {}).items():
        for p in ps:
            index.record(w, np.array(p, dtype=np.int64), 0.0)
    return ClusterView([WorkerState(i, in_flight=x) for i, x in enumerate(loads)], index)


def req(units: list[int]) -> RouteRequest:
    return RouteRequest(np.array(units, dtype=np.int64))


def route(pol: CacheAware, v: ClusterView, units: list[int]) -> tuple[int, str]:
    d = pol.route(req(units), v)
    return d.worker, d.branch


PREFIX = list(range(1, 9))  # 8 units, held by worker 1


def test_defaults_and_registry() -> None:
    """Published defaults 0.5 / 32 / 1.0001; registered as 'cache_aware' and uses the index."""
    pol = make_router_policy("cache_aware")
    assert isinstance(pol, CacheAware) and pol.uses_index
    assert (pol.cache_threshold, pol.balance_abs_threshold, pol.balance_rel_threshold) == (
        0.5, 32, 1.0001)


def test_imbalance_overrides_a_full_hit() -> None:
    """Loads [40, 5, 10, 3]: spread 37 > 32 and 40 > 1.0001*3, so argmin 3 despite w1's hit."""
    v = view([40, 5, 10, 3], {1: [PREFIX]})
    assert route(CacheAware(), v, PREFIX) == (3, "balance")


def test_abs_threshold_is_strict() -> None:
    """Spread exactly 32 (loads [32, 0]) is balanced; 33 is not."""
    v = view([32, 0], {0: [PREFIX]})
    assert route(CacheAware(), v, PREFIX) == (0, "hit")
    v = view([33, 0], {0: [PREFIX]})
    assert route(CacheAware(), v, PREFIX) == (1, "balance")


def test_rel_threshold_condition() -> None:
    """Spread 33 > 32 but 400033 <= 1.0001*400000 = 400040: not imbalanced; 400041 is."""
    v = view([400_033, 400_000], {0: [PREFIX]})
    assert route(CacheAware(), v, PREFIX) == (0, "hit")
    v = view([400_041, 400_000], {0: [PREFIX]})
    assert route(CacheAware(), v, PREFIX) == (1, "balance")
    # custom thresholds: spread 20 > 10, but 80 <= 1.5*60 = 90 -> balanced; 100 > 90 not
    pol = CacheAware(balance_abs_threshold=10, balance_rel_threshold=1.5)
    assert route(pol, view([80, 60], {0: [PREFIX]}), PREFIX) == (0, "hit")
    assert route(pol, view([100, 60], {0: [PREFIX]}), PREFIX) == (1, "balance")


def test_hit_above_threshold() -> None:
    """8 of 14 units matched on worker 2 (0.571 > 0.5): route to worker 2."""
    v = view([0, 0, 0, 0], {0: [[50, 51]], 2: [PREFIX]})
    assert route(CacheAware(), v, [*PREFIX, 20, 21, 22, 23, 24, 25]) == (2, "hit")


def test_exactly_half_is_a_miss_to_smallest_tree() -> None:
    """4 of 8 matched (exactly 0.5) is no hit: go to the smallest tree (sizes 20, 4, 6, 3 -> 3)."""
    v = view([0, 0, 0, 0], {0: [list(range(100, 120))], 1: [[1, 2, 3, 4]],
                            2: [list(range(200, 206))], 3: [[90, 91, 92]]})
    assert list(v.index_sizes()) == [20, 4, 6, 3]
    assert route(CacheAware(), v, PREFIX) == (3, "miss")
    # 4 of 7 (0.571) is a hit on worker 1
    v = view([0, 0, 0, 0], {0: [list(range(100, 120))], 1: [[1, 2, 3, 4]],
                            2: [list(range(200, 206))], 3: [[90, 91, 92]]})
    assert route(CacheAware(), v, PREFIX[:7]) == (1, "hit")


def test_miss_ignores_load() -> None:
    """A miss goes to the smallest tree even when that worker is the busiest (balanced)."""
    v = view([30, 0, 0], {1: [[7, 7, 7, 7]], 2: [[8, 8]]})
    assert route(CacheAware(), v, [1, 2, 3]) == (0, "miss")


def test_ties_go_to_lowest_index() -> None:
    """Equal matches (workers 1 and 3) go to 1; equal tree sizes (all empty) go to 0."""
    v = view([0, 0, 0, 0], {1: [PREFIX], 3: [PREFIX]})
    assert route(CacheAware(), v, PREFIX) == (1, "hit")
    assert route(CacheAware(), view([0, 0, 0]), [1, 2, 3]) == (0, "miss")
    v = view([0, 9, 9, 3], {})  # balanced (spread 9): a miss, all trees empty -> 0
    assert route(CacheAware(), v, [5]) == (0, "miss")


def test_empty_prompt_is_a_miss() -> None:
    """An empty prompt has no hit ratio: it goes to the smallest tree."""
    v = view([0, 0], {0: [[1]]})
    assert route(CacheAware(), v, []) == (1, "miss")


def test_threshold_zero_hits_on_any_match() -> None:
    """cache_threshold 0: one matched unit of 100 is a hit."""
    v = view([0, 0], {1: [[1, 99]]})
    assert route(CacheAware(cache_threshold=0.0), v, [1, *range(200, 299)]) == (1, "hit")


@pytest.mark.parametrize("kwargs", [
    {"cache_threshold": 1.5}, {"cache_threshold": -0.1}, {"cache_threshold": float("nan")},
    {"balance_abs_threshold": -1}, {"balance_abs_threshold": 2.5},
    {"balance_rel_threshold": 0.9}, {"balance_rel_threshold": float("inf")},
])
def test_bad_parameters_raise(kwargs: dict[str, float]) -> None:
    """Out-of-range thresholds raise ConfigError naming the parameter."""
    with pytest.raises(ConfigError, match=next(iter(kwargs))):
        CacheAware(**kwargs)  # type: ignore[arg-type]
