"""The offline optimum: equal to brute force on tiny traces, never beaten online."""

from functools import cache
from itertools import combinations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from kvroute.cache import RadixCache, make_policy, optimal_hit_rate, replay
from kvroute.errors import ConfigError


def brute_force_hits(trace, capacity):
    """Max total hits over every choice of what to keep (prefix-closed, <= capacity)
    after each request, by exhaustive search."""
    trace = [tuple(t) for t in trace]

    def closed(s):
        return all(x[:-1] in s or len(x) == 1 for x in s)

    @cache
    def best(j, state):
        if j == len(trace):
            return 0
        t = trace[j]
        hit = max((i for i in range(1, len(t) + 1) if t[:i] in state), default=0)
        pool = state | {t[:i] for i in range(1, len(t) + 1)}
        options = [frozenset(c) for r in range(min(capacity, len(pool)) + 1)
                   for c in combinations(sorted(pool), r) if closed(frozenset(c))]
        return hit + max(best(j + 1, o) for o in options)

    return best(0, frozenset())


@settings(max_examples=40, deadline=None)
@given(trace=st.lists(st.lists(st.integers(0, 1), min_size=1, max_size=3), min_size=1,
                      max_size=6),
       capacity=st.integers(0, 4))
def test_optimal_equals_brute_force_on_tiny_traces(trace, capacity):
    """Tree Belady reaches the exhaustive optimum."""
    total = sum(map(len, trace))
    got = optimal_hit_rate(trace, capacity) * total
    assert round(got) == brute_force_hits(trace, capacity)


def test_optimal_beats_every_online_policy_on_random_traces():
    """No online policy gets more hits than the optimum at the same capacity."""
    rng = np.random.default_rng(5)
    for trial in range(5):
        heads = [rng.integers(0, 30, size=rng.integers(3, 20)) for _ in range(8)]
        trace = [np.concatenate([heads[rng.integers(0, 8)], rng.integers(0, 30, 5)])
                 for _ in range(200)]
        cap = int(rng.integers(10, 80))
        best = optimal_hit_rate(trace, cap)
        for name in ("lru", "rlt", "rlt_faithful"):
            pol = make_policy(name, seed=trial)
            assert replay(RadixCache(cap, pol), trace).hit_rate <= best + 1e-12


def test_optimal_needs_the_future_and_the_request_clock():
    """Clear errors: no requests given; a clock that is not the request index."""
    try:
        make_policy("optimal")
    except ConfigError as e:
        assert "needs the future" in str(e)
    else:
        raise AssertionError("expected ConfigError")
    c = RadixCache(2, make_policy("optimal", requests=[[1, 2, 3]]))
    try:
        c.insert([1, 2, 3], now=7)
    except ConfigError as e:
        assert "request index" in str(e)
    else:
        raise AssertionError("expected ConfigError")
