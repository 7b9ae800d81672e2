"""ray_prefix (Ray Serve LLM's PrefixCacheAffinityRouter): spread <= 10 -> best match at a
match rate >= 0.1, else the smallest trees; otherwise power of two."""

from __future__ import annotations

import numpy as np
import pytest

from kvroute.errors import ConfigError
from kvroute.routing.base import WorkerState
from kvroute.routing.ray_prefix import RayPrefix
from kvroute.routing.registry import make_router_policy
from tests.routing.views import prompt, view_of


def loads(*xs: int) -> list[WorkerState]:
    return [WorkerState(i, in_flight=x) for i, x in enumerate(xs)]


def test_best_match_at_the_match_rate() -> None:
    """20-unit prompt: w2 holds 2 units (rate 0.1 >= 0.1) -> w2 alone, whatever its load."""
    d = RayPrefix().route(prompt(20), view_of(loads(0, 0, 9, 0), {2: 2, 1: 1}))
    assert (d.worker, d.branch) == (2, "hit")


def test_below_the_rate_goes_to_the_smallest_trees() -> None:
    """w2 holds 1 of 20 (0.05 < 0.1): a miss; the smallest trees are w0 and w3 (0 units):
    power of two between them picks the one with fewer in flight (w3)."""
    pol = RayPrefix(seed=3)
    for _ in range(20):
        view = view_of(loads(4, 0, 0, 1), {2: 1})
        assert view._index is not None
        view._index.record(1, np.arange(100, 130, dtype=np.int64), 0.0)  # type: ignore[attr-defined]
        d = pol.route(prompt(20), view)
        assert (d.worker, d.branch) == (3, "miss")


def test_equal_best_matches_draw_two_and_take_the_lighter() -> None:
    """w0, w1 and w3 hold all 8 units: every decision is one of them, never w2 (no match),
    and never the heaviest of three when the draw offers a lighter one: w1 (load 5) is
    chosen only when paired with itself, impossible, so only w0 or w3."""
    pol = RayPrefix(seed=1)
    view = view_of(loads(1, 5, 0, 2), {0: 8, 1: 8, 3: 8})
    chosen = {pol.route(prompt(8), view).worker for _ in range(200)}
    assert chosen == {0, 3}


def test_imbalance_falls_back_to_power_of_two() -> None:
    """Spread 11 > 10: the full match on w0 (load 11) is ignored; the lighter of two draws,
    so w0 (the heaviest) is never chosen; spread 10 keeps the hit."""
    pol = RayPrefix(seed=2)
    view = view_of(loads(11, 0, 3), {0: 16})
    picks = [pol.route(prompt(16), view) for _ in range(200)]
    assert {d.branch for d in picks} == {"balance"} and 0 not in {d.worker for d in picks}
    assert RayPrefix().route(prompt(16), view_of(loads(10, 0, 3), {0: 16})).worker == 0


def test_seeded_and_masked() -> None:
    """Same seed, same draws; a mask keeps every choice among the allowed workers."""
    view = view_of(loads(0, 0, 0, 0))
    runs = []
    for _ in range(2):
        pol = RayPrefix(seed=9)
        runs.append([pol.route(prompt(4), view).worker for _ in range(50)])
    assert runs[0] == runs[1] and len(set(runs[0])) > 1
    view.allow(np.array([False, True, False, True]))
    pol = RayPrefix(seed=4)
    assert {pol.route(prompt(4), view).worker for _ in range(50)} == {1, 3}


def test_registry_and_bad_parameters() -> None:
    """Registered with an index; out-of-range parameters are refused."""
    assert isinstance(make_router_policy("ray_prefix", seed=1), RayPrefix)
    assert RayPrefix.uses_index
    with pytest.raises(ConfigError, match="imbalanced_threshold"):
        RayPrefix(imbalanced_threshold=-1)
    with pytest.raises(ConfigError, match="match_rate"):
        RayPrefix(match_rate=1.5)
