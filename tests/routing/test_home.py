"""Home: the worker every router sends a prompt none of them can place by its own index,
and how far the band lets it cost more than the best choice."""

from __future__ import annotations

import numpy as np
import pytest

from kvroute.routing.home import Home
from kvroute.routing.prefix_hash import PrefixHash

ALL = np.ones(4, dtype=bool)


def test_the_home_is_the_ring_owner_of_what_follows_the_common_prefix() -> None:
    shared = np.arange(100, dtype=np.int64)  # a template every worker holds
    prompts = [np.concatenate([shared, np.arange(k * 1000, k * 1000 + 500)]) for k in range(40)]
    ring = PrefixHash()
    for p in prompts:
        placed = Home(0.998).place(p, [100] * 4, ALL, [0, 1, 2, 3])
        assert placed == (ring.owner(p[100:], 4, ALL), 100)
        # the same for every router, whatever else it has seen: a fresh one agrees
        assert Home(0.9).place(p, [100] * 4, ALL, [0, 1, 2, 3]) == placed
    homes = {Home(0.998).place(p, [100] * 4, ALL, [0, 1, 2, 3])[0] for p in prompts}
    assert homes == {0, 1, 2, 3}  # 40 prompts spread over the workers


def test_no_home_where_a_worker_is_known_to_hold_more() -> None:
    p = np.arange(600, dtype=np.int64)
    assert Home(0.998).place(p, [100, 300, 100, 100], ALL, [0, 1, 2, 3]) is None
    # a worker not allowed does not count, and the home is an allowed one
    mask = np.array([True, False, True, True])
    placed = Home(0.998).place(p, [100, 300, 100, 100], mask, [0, 2, 3])
    assert placed is not None and placed[1] == 100 and mask[placed[0]]


def test_the_band_is_twice_the_share_found_cached_at_home() -> None:
    home = Home(forget=1.0)
    assert home.band == pytest.approx(1.0)  # prior: half, worth two samples
    for _ in range(8):  # 1000-unit prompts, 200 held by all, 600 more found cached
        home.learn(1000, 200, 800)
    assert home.surprise == pytest.approx((1.0 + 8 * 0.75) / 10)
    assert home.band == pytest.approx(2 * 0.7)
    for _ in range(90):  # another router's placements stopped showing there
        home.learn(1000, 200, 150)  # below the common part: a share of 0, not negative
    assert home.band == pytest.approx(2 * (1.0 + 6.0) / 100)


def test_choose_takes_the_home_within_the_band_and_counts_it() -> None:
    p = np.arange(600, dtype=np.int64)
    home = Home(1.0)  # band 1: the home may cost up to twice the best
    h = home.place(p, [0] * 4, ALL, [0, 1, 2, 3])[0]
    best = (h + 1) % 4
    cost = [1.0] * 4
    cost[h] = 2.0
    assert home.choose(p, [0] * 4, ALL, [0, 1, 2, 3], cost, best) == (h, 0.0)
    cost[h] = 2.01
    assert home.choose(p, [0] * 4, ALL, [0, 1, 2, 3], cost, best) == (best, -1.0)
    assert home.choose(p, [0, 9, 0, 0], ALL, [0, 1, 2, 3], [1.0] * 4, best) == (best, -1.0)
    assert home.sent == 1
