"""aibrix_prefix (2026: spread 8, mean + 1 sd, ties by running) and aibrix_prefix_2025 (spread
16, mean + 2 sd, ties by index): the imbalance switch, the filter, best match or least running."""

from __future__ import annotations

import numpy as np
import pytest

from kvroute.errors import ConfigError
from kvroute.routing.aibrix_prefix import AibrixPrefix, AibrixPrefix2025
from kvroute.routing.base import ClusterView, RouteRequest, WorkerState
from kvroute.routing.prefix_index import PrefixIndex
from kvroute.routing.registry import make_router_policy

PROMPT = list(range(1, 11))


def view(loads: list[int], prompts: dict[int, list[list[int]]] | None = None) -> ClusterView:
    index = PrefixIndex(len(loads))
    for w, ps in (prompts or {}).items():
        for p in ps:
            index.record(w, np.array(p, dtype=np.int64), 0.0)
    return ClusterView([WorkerState(i, in_flight=x) for i, x in enumerate(loads)], index)


def route(v: ClusterView, units: list[int], cls: type[AibrixPrefix] = AibrixPrefix2025,
          **kwargs: float) -> tuple[int, str]:
    pol = cls(**kwargs)  # type: ignore[arg-type]
    d = pol.route(RouteRequest(np.array(units, dtype=np.int64)), v)
    return d.worker, d.branch


def test_defaults_and_registry() -> None:
    """Defaults: 2026 spread 8 and 1 sd; 2025 spread 16 and 2 sd; both use the index."""
    pol = make_router_policy("aibrix_prefix_2025")
    assert isinstance(pol, AibrixPrefix2025) and pol.uses_index
    assert (pol.imbalance_threshold, pol.std_factor) == (16, 2.0)
    new = make_router_policy("aibrix_prefix")
    assert type(new) is AibrixPrefix and new.uses_index
    assert (new.imbalance_threshold, new.std_factor) == (8, 1.0)


def test_2026_imbalance_switch_and_one_sd_filter() -> None:
    """2026: spread 9 > 8 -> least running (w1). Spread 8: mean 4, sd 2.92, limit 6.92 keeps
    w0 (load 8, the only match) out -> miss to w1; the 2025 rule (limit 9.83) takes w0."""
    assert route(view([9, 0, 5, 3], {0: [PROMPT]}), PROMPT, AibrixPrefix) == (1, "balance")
    assert route(view([8, 0, 5, 3], {0: [PROMPT]}), PROMPT, AibrixPrefix) == (1, "miss")
    assert route(view([8, 0, 5, 3], {0: [PROMPT]}), PROMPT) == (0, "hit")


def test_2026_equal_matches_go_to_the_least_running() -> None:
    """Loads [2, 2, 2, 1] (limit 2.18, all under), w1 and w3 match all 10 units: 2026 takes
    w3 (1 running), 2025 w1 (lowest index); a longer match still beats lower load."""
    v = view([2, 2, 2, 1], {1: [PROMPT], 3: [PROMPT]})
    assert route(v, PROMPT, AibrixPrefix) == (3, "hit")
    assert route(view([2, 2, 2, 1], {1: [PROMPT], 3: [PROMPT]}), PROMPT) == (1, "hit")
    v = view([1, 1, 0, 1], {0: [PROMPT[:6]], 2: [PROMPT[:3]]})
    assert route(v, PROMPT, AibrixPrefix) == (0, "hit")
    assert route(view([3, 1, 2]), PROMPT, AibrixPrefix) == (1, "miss")


def test_imbalance_switch() -> None:
    """Spread 17 > 16 -> least running (w1) despite w0's full match; spread 16 -> the match."""
    assert route(view([17, 0, 5, 3], {0: [PROMPT]}), PROMPT) == (1, "balance")
    assert route(view([16, 0, 5, 3], {0: [PROMPT]}), PROMPT) == (0, "hit")
    assert route(view([17, 1, 5, 3], {0: [PROMPT]}), PROMPT, imbalance_threshold=20) == (
        0, "hit")


def test_best_match_wins_over_load() -> None:
    """Balanced: the longest match (w2: 6 units) beats a shorter one (w0: 3) and lower load."""
    v = view([1, 0, 4, 2], {0: [PROMPT[:3]], 2: [PROMPT[:6]]})
    assert route(v, PROMPT) == (2, "hit")


def test_stddev_filter_excludes_a_hot_worker() -> None:
    """10 workers, running [10, 0 x 9]: mean 1, std 3, limit 7 -> w0 (10) is excluded."""
    loads = [10] + [0] * 9
    assert route(view(loads, {0: [PROMPT], 5: [PROMPT[:2]]}), PROMPT) == (5, "hit")
    # only the excluded worker matches: least running (w1, lowest index of the idle ones)
    assert route(view(loads, {0: [PROMPT]}), PROMPT) == (1, "miss")
    # std_factor 3 puts the limit at 10: w0 is a candidate again
    assert route(view(loads, {0: [PROMPT]}), PROMPT, std_factor=3.0) == (0, "hit")


def test_stddev_filter_edge() -> None:
    """[10, 0 x 4]: mean 2, std 4, limit exactly 10 -> kept; [10, 0 x 5]: limit 9.12 -> not."""
    assert route(view([10, 0, 0, 0, 0], {0: [PROMPT]}), PROMPT) == (0, "hit")
    assert route(view([10, 0, 0, 0, 0, 0], {0: [PROMPT]}), PROMPT) == (1, "miss")


def test_no_match_goes_to_least_running() -> None:
    """Nothing matches anywhere: least running (w1 of [3, 1, 2]); ties to the lowest index."""
    v = view([3, 1, 2], {0: [[90, 91]], 2: [[80]]})
    assert route(v, PROMPT) == (1, "miss")
    assert route(view([2, 1, 1]), PROMPT) == (1, "miss")


def test_match_ties_go_to_lowest_index() -> None:
    """Workers 1 and 3 match the same 10 units: worker 1."""
    assert route(view([0, 2, 0, 0], {1: [PROMPT], 3: [PROMPT]}), PROMPT) == (1, "hit")


@pytest.mark.parametrize("kwargs", [
    {"imbalance_threshold": -1}, {"imbalance_threshold": 1.5},
    {"std_factor": -0.5}, {"std_factor": float("inf")},
])
def test_bad_parameters_raise(kwargs: dict[str, float]) -> None:
    """Out-of-range parameters raise ConfigError naming the parameter."""
    with pytest.raises(ConfigError, match=next(iter(kwargs))):
        AibrixPrefix(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=next(iter(kwargs))):
        AibrixPrefix2025(**kwargs)  # type: ignore[arg-type]
