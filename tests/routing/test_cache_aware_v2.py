"""cache_aware_v2 (the SGLang gateway, 2026 source: 0.5 / 32 / 1.1) and cache_aware_v2_cli
(0.3 / 64 / 1.5): misses to the least-loaded worker; the highest-overlap option."""

from __future__ import annotations

import numpy as np
import pytest

from kvroute.errors import ConfigError
from kvroute.routing.base import ClusterView, RouteRequest, WorkerState
from kvroute.routing.cache_aware import CacheAware
from kvroute.routing.cache_aware_v2 import CacheAwareV2, CacheAwareV2Cli
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
    """2026 defaults 0.5 / 32 / 1.1; the command line's 0.3 / 64 / 1.5; both use the index."""
    pol = make_router_policy("cache_aware_v2")
    assert isinstance(pol, CacheAwareV2) and isinstance(pol, CacheAware) and pol.uses_index
    assert (pol.cache_threshold, pol.balance_abs_threshold, pol.balance_rel_threshold) == (
        0.5, 32, 1.1)
    assert not pol.highest_overlap
    cli = make_router_policy("cache_aware_v2_cli")
    assert isinstance(cli, CacheAwareV2Cli) and cli.uses_index
    assert (cli.cache_threshold, cli.balance_abs_threshold, cli.balance_rel_threshold) == (
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


def test_cache_thresholds() -> None:
    """7 of 20 matched (0.35): a hit for the CLI defaults (> 0.3), a miss at 0.5 (v1 to the
    smallest tree, v2 to the least loaded); 11 of 20 (0.55) is a hit at 0.5."""
    prompt = list(range(1, 21))
    prompts = {2: [prompt[:7]]}
    assert route(CacheAwareV2Cli(), view([0, 0, 0], prompts), prompt) == (2, "hit")
    assert route(CacheAware(), view([0, 0, 0], prompts), prompt) == (0, "miss")
    assert route(CacheAwareV2(), view([1, 0, 0], prompts), prompt) == (1, "miss")
    assert route(CacheAwareV2(), view([0, 0, 0], {2: [prompt[:11]]}), prompt) == (2, "hit")
    assert route(CacheAwareV2Cli(), view([0, 1, 0], {2: [prompt[:3]]}), prompt[:10]) == (
        0, "miss")


def test_balance_thresholds() -> None:
    """CLI: spread 64 is balanced, 70 (vs 0) is not; [190, 130] fails 190 > 1.5*130 = 195.
    2026: spread 32 balanced, 33 not; [400, 364] fails 400 > 1.1*364 = 400.4, [401, 364] not."""
    prompts = {0: [[1, 2, 3, 4]]}
    cli, new = CacheAwareV2Cli(), CacheAwareV2()
    assert route(cli, view([64, 0], prompts), [1, 2, 3, 4]) == (0, "hit")
    assert route(cli, view([70, 0], prompts), [1, 2, 3, 4]) == (1, "balance")
    assert route(cli, view([190, 130], prompts), [1, 2, 3, 4]) == (0, "hit")
    assert route(cli, view([200, 130], prompts), [1, 2, 3, 4]) == (1, "balance")
    assert route(new, view([32, 0], prompts), [1, 2, 3, 4]) == (0, "hit")
    assert route(new, view([33, 0], prompts), [1, 2, 3, 4]) == (1, "balance")
    assert route(new, view([400, 364], prompts), [1, 2, 3, 4]) == (0, "hit")
    assert route(new, view([401, 364], prompts), [1, 2, 3, 4]) == (1, "balance")
    assert route(cli, view([100, 60], prompts), [1, 2, 3, 4]) == (0, "hit")
    assert route(new, view([100, 60], prompts), [1, 2, 3, 4]) == (1, "balance")


def test_highest_overlap_option() -> None:
    """highest_overlap: the longest match whatever its ratio (3 of 20 on w0 and w2), ties to
    fewer in flight, then the smaller tree (w2: 3 units, w0: 13); off: a miss to w1."""
    prompt = list(range(1, 21))
    prompts = {0: [prompt[:3], list(range(90, 100))], 2: [prompt[:3]]}
    on = CacheAwareV2(highest_overlap=True)
    assert route(on, view([1, 0, 1, 0], prompts), prompt) == (2, "overlap")
    assert route(on, view([0, 0, 1, 0], prompts), prompt) == (0, "overlap")
    assert route(CacheAwareV2(), view([1, 0, 1, 0], prompts), prompt) == (1, "miss")
    assert route(on, view([40, 0, 1, 0], prompts), prompt) == (1, "balance")
    assert route(on, view([1, 1, 1, 0]), prompt) == (3, "overlap")


def test_bad_parameters_raise() -> None:
    """Validation is inherited, with the v2 name in the message."""
    with pytest.raises(ConfigError, match="cache_aware_v2: cache_threshold"):
        CacheAwareV2(cache_threshold=2.0)
    with pytest.raises(ConfigError, match="cache_aware_v2_cli: balance_abs_threshold"):
        CacheAwareV2Cli(balance_abs_threshold=-1)
    with pytest.raises(ConfigError, match="highest_overlap"):
        CacheAwareV2(highest_overlap=1)  # type: ignore[arg-type]
