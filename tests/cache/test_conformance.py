"""Every registered policy against a naive model of the cached prefix set (Hypothesis),
and its declared capabilities against what it does."""

import inspect

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvroute.cache import RadixCache, make_policy, policy_names
from kvroute.cache.eviction import policy_class
from kvroute.errors import ConfigError

seqs = st.lists(st.integers(0, 2), min_size=0, max_size=8)
ops = st.lists(st.one_of(
    st.tuples(st.just("insert"), seqs),
    st.tuples(st.just("match_lock"), seqs),
    st.tuples(st.just("unlock"), st.integers(0, 5)),
    st.tuples(st.just("evict"), st.integers(1, 12)),
), min_size=1, max_size=40)


def prefixes(seq, p):
    """The page-aligned prefixes of seq, as tuples."""
    return {tuple(seq[:i]) for i in range(p, len(seq) // p * p + 1, p)}


def cached(c):
    return set().union(*(prefixes(list(s), c.page_size) for s in c.cached_sequences()))


def build(name, capacity, page, requests):
    """A cache with the policy built from what its class says it needs."""
    cls = policy_class(name)
    if cls.needs_future:
        params = {"requests": requests}
    elif cls.takes_seed:
        params = {"seed": 0}
    else:
        params = {}
    return RadixCache(capacity, make_policy(name, **params), page_size=page)


def run_conformance(name, capacity, page, program):
    requests = [np.array(arg if isinstance(arg, list) else [], dtype=np.int64)
                for _, arg in program]
    c = build(name, capacity, page, requests)
    locked: list = []  # (handle, path)
    for now, (op, arg) in enumerate(program):
        before = cached(c)
        if op == "insert":
            new = c.insert(arg, now=now)
            want = prefixes(arg, page)
            assert new == len(want - before) * page
            assert cached(c) <= before | want
        elif op == "match_lock":
            hit = max((len(x) for x in prefixes(arg, page) if x in before), default=0)
            shape = sum(1 for _ in c.nodes())
            assert c.peek(arg) == hit
            assert sum(1 for _ in c.nodes()) == shape  # peek never splits
            r = c.match(arg, now=now)
            assert r.hit == hit
            assert cached(c) == before
            c.lock(r.handle)
            locked.append((r.handle, tuple(arg[: r.hit])))
        elif op == "unlock" and locked:
            handle, _ = locked.pop(arg % len(locked))
            c.unlock(handle)
        elif op == "evict":
            evictable = c.evictable
            freed = c.evict(arg)
            after = cached(c)
            assert after <= before and freed == (len(before) - len(after)) * page
            if policy_class(name).frees_whole_leaves:
                assert freed >= min(arg, evictable) and freed <= evictable
            else:
                assert freed == min(-(-arg // page) * page, evictable)
        for _, path in locked:
            assert prefixes(path, page) <= cached(c), "a locked path was evicted"
        assert c.total <= c.capacity
        assert c.total == len(cached(c)) * page
        c.check_integrity()


@settings(max_examples=60, deadline=None)
@given(capacity=st.integers(0, 14), page=st.sampled_from([1, 2]), program=ops)
def test_every_policy_conforms(capacity, page, program):
    """For every registered policy: integrity after every operation, capacity never
    exceeded, locked paths never evicted, hits equal to the naive prefix-set model,
    exact frees (a policy that frees whole leaves: at least what was asked)."""
    for name in policy_names():
        run_conformance(name, capacity, page, program)


@pytest.mark.parametrize("name", policy_names())
def test_capabilities_match_the_constructor(name):
    """``takes_seed``: the constructor has a ``seed`` parameter; ``needs_future``: it
    has ``requests`` and refuses to be built without them."""
    cls = policy_class(name)
    params = inspect.signature(cls.__init__).parameters
    assert ("seed" in params) == cls.takes_seed
    assert ("requests" in params) == cls.needs_future
    if cls.needs_future:
        with pytest.raises(ConfigError, match="needs the future"):
            make_policy(name)
    else:
        make_policy(name, **({"seed": 1} if cls.takes_seed else {}))


def test_whole_leaf_capability_is_what_evict_does():
    """Asked for 1 token of a 3-token leaf, a policy that frees whole leaves frees 3,
    the others exactly 1."""
    for name in policy_names():
        c = build(name, 10, 1, [np.array([1, 2, 3])])
        c.insert([1, 2, 3], now=0)
        assert c.evict(1) == (3 if policy_class(name).frees_whole_leaves else 1), name
