"""The router's prefix index: per-worker matches, LRU trimming, membership changes."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from kvroute.routing.prefix_index import PrefixIndex, _fits_int32


def a(*xs: int) -> np.ndarray:
    return np.array(xs, dtype=np.int64)


def test_match_per_worker_with_splits() -> None:
    """Each worker's match is its own longest prefix; a partial edge counts."""
    idx = PrefixIndex(3)
    idx.record(0, a(1, 2, 3, 4), 0.0)
    idx.record(1, a(1, 2, 9), 1.0)
    assert idx.match(a(1, 2, 3, 7)).tolist() == [3, 2, 0]
    assert idx.match(a(1, 2, 9, 9)).tolist() == [2, 3, 0]
    assert idx.match(a(5)).tolist() == [0, 0, 0]
    assert idx.sizes().tolist() == [4, 3, 0]
    idx.check_integrity()


def test_trim_is_leaf_lru_per_worker_on_the_interval() -> None:
    """Over capacity, a worker loses its least recently recorded leaves at the next trim."""
    idx = PrefixIndex(2, capacity=6, trim_interval=60.0)
    idx.record(0, a(1, 2, 3), 0.0)
    idx.record(0, a(4, 5, 6), 10.0)
    idx.record(1, a(1, 2, 3), 20.0)
    idx.record(0, a(7, 8, 9), 30.0)  # worker 0 holds 9 > 6, but no trim before t = 60
    assert idx.sizes().tolist() == [9, 3]
    idx.record(1, a(4, 5), 61.0)  # the trim runs: worker 0's oldest leaf (1,2,3) goes
    assert idx.sizes().tolist() == [6, 5]
    assert idx.match(a(1, 2, 3)).tolist() == [0, 3]
    assert idx.match(a(7, 8, 9)).tolist() == [3, 0]
    idx.check_integrity()


def test_remove_worker_shifts_indices() -> None:
    """Removing a worker forgets its entries; later workers move down one index."""
    idx = PrefixIndex(3)
    idx.record(0, a(1, 2), 0.0)
    idx.record(1, a(3, 4), 0.0)
    idx.record(2, a(1, 2, 5), 0.0)
    idx.remove_worker(1)
    assert idx.match(a(1, 2, 5)).tolist() == [2, 3]
    assert idx.match(a(3, 4)).tolist() == [0, 0]
    idx.add_worker()
    assert idx.sizes().tolist() == [2, 3, 0]
    idx.check_integrity()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.lists(st.integers(0, 3), min_size=1,
                                                       max_size=6),
                          st.sampled_from(["record", "match", "match other"])), max_size=25),
       st.lists(st.integers(0, 3), max_size=7))
def test_matches_a_naive_model(records: list[tuple[int, list[int], str]],
                               probe: list[int]) -> None:
    """Without trimming, match = longest common prefix with anything recorded per worker;
    whether a record follows a match of the same units (it starts where that walk ended)
    or of others (it walks again) changes nothing."""
    idx = PrefixIndex(3)
    held: list[list[list[int]]] = [[], [], []]
    for t, (w, seq, first) in enumerate(records):
        units = np.array(seq, dtype=np.int64)
        if first != "record":
            idx.match(units)
        if first == "match other":
            idx.match(np.array([*seq[:-1], 3 - seq[-1]], dtype=np.int64))
        idx.record(w, units, float(t))
        held[w].append(seq)
        idx.check_integrity()

    assert_naive_model(idx, held, probe)
    # last_sent: the latest record of each worker that reaches its deepest matched node,
    # i.e. that shares at least its match with the probe
    want = idx.match(np.array(probe, dtype=np.int64)).tolist()
    last = [max((float(t) for t, (v, seq, _) in enumerate(records) if v == w and m > 0
                 and seq[:m] == probe[:m]), default=-np.inf) for w, m in enumerate(want)]
    matched, times = idx.match_last_sent(np.array(probe, dtype=np.int64))
    assert matched.tolist() == want
    assert times.tolist() == last


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.lists(st.integers(0, 3), min_size=1,
                                                       max_size=6),
                          st.booleans(), st.integers(0, 2)), max_size=25),
       st.lists(st.integers(0, 3), max_size=7))
def test_forget_undoes_undelivered_records(
        records: list[tuple[int, list[int], bool, int]], probe: list[int]) -> None:
    """Records whose request never arrived are forgotten, after later records of other
    workers: the index then matches the naive model of the delivered records only. (The
    guarantee is exact when no record of the same worker comes in between; the forget
    happens before it here. Otherwise a stale belief may remain, never a broken index.)"""
    idx = PrefixIndex(3)
    held: list[list[list[int]]] = [[], [], []]
    pending: list[tuple[int, int, np.ndarray, int, float]] = []  # (due, w, seq, keep, t)
    for t, (w, seq, delivered, lag) in enumerate(records):
        for item in [p for p in pending if p[1] == w]:
            pending.remove(item)
            idx.forget(item[1], item[2], item[3], item[4])
        units = np.array(seq, dtype=np.int64)
        keep = int(idx.match(units)[w])
        idx.record(w, units, float(t))
        if delivered:
            held[w].append(seq)
        else:
            pending.append((t + lag, w, units, keep, float(t)))
        for item in [p for p in pending if p[0] <= t]:
            pending.remove(item)
            idx.forget(item[1], item[2], item[3], item[4])
        idx.check_integrity()
    for _, w, units, keep, t0 in pending:
        idx.forget(w, units, keep, t0)
    idx.check_integrity()

    assert_naive_model(idx, held, probe)


def assert_naive_model(idx: PrefixIndex, held: list[list[list[int]]], probe: list[int]) -> None:
    """match = longest common prefix with anything held per worker; sizes = distinct
    prefixes held per worker."""
    def lcp(x: list[int], y: list[int]) -> int:
        k = 0
        while k < min(len(x), len(y)) and x[k] == y[k]:
            k += 1
        return k

    want = [max((lcp(probe, s) for s in held[w]), default=0) for w in range(len(held))]
    assert idx.match(np.array(probe, dtype=np.int64)).tolist() == want
    sizes = [len({tuple(s[:k]) for s in held[w] for k in range(1, len(s) + 1)})
             for w in range(len(held))]
    assert idx.sizes().tolist() == sizes


def test_a_worker_bounded_by_set_capacity_is_trimmed_at_once_and_later() -> None:
    """set_capacity bounds one worker (least recently recorded leaves go first, now and
    at every later trim); the others keep the default bound."""
    idx = PrefixIndex(2, capacity=1000, trim_interval=10.0)
    for k in range(5):
        idx.record(0, np.arange(100 * k, 100 * k + 100, dtype=np.int64), float(k))
        idx.record(1, np.arange(100 * k, 100 * k + 100, dtype=np.int64), float(k))
    idx.set_capacity(0, 250)
    assert idx.sizes().tolist() == [200, 500]
    assert idx.match(np.arange(0, 100, dtype=np.int64)).tolist() == [0, 100]
    assert idx.match(np.arange(400, 500, dtype=np.int64)).tolist() == [100, 100]
    for k in range(5, 8):
        idx.record(0, np.arange(100 * k, 100 * k + 100, dtype=np.int64), float(k))
    assert idx.sizes().tolist() == [500, 500]  # not trimmed before the next interval
    idx.record(0, np.arange(900, 1000, dtype=np.int64), 10.0)
    assert idx.sizes().tolist() == [200, 500]
    assert idx.capacities().tolist() == [250, 1000]
    idx.add_worker()
    idx.remove_worker(0)
    assert idx.capacities().tolist() == [1000, 1000]
    idx.check_integrity()


def test_node_units_bound_many_short_prompts() -> None:
    """With node_units, each node held costs that much against the bound (sizes() still
    counts units only): many short distinct prompts are trimmed to fit."""
    idx = PrefixIndex(1, capacity=1000, trim_interval=1e9)
    idx.node_units = 90
    for k in range(50):
        idx.record(0, np.array([k, 1000 + k], dtype=np.int64), float(k))
    assert idx.sizes().tolist() == [100]  # 50 leaves of 2 units: 100 + 50 * 90 > 1000
    idx.trim()
    assert idx.sizes().tolist() == [20]  # 10 leaves: 20 + 900 = 920 <= 1000
    assert idx.match(np.array([49, 1049], dtype=np.int64)).tolist() == [2]  # newest kept
    assert idx.match(np.array([0, 1000], dtype=np.int64)).tolist() == [0]
    idx.check_integrity()


def test_units_of_any_integer_dtype_match_by_value() -> None:
    """Character units come as uint8 or uint32 (the router's chars), token ids as int64: a
    node keeps its units' dtype, and matching compares values, whatever the dtypes."""
    idx = PrefixIndex(2)
    idx.record(0, np.frombuffer(b"abcdef", dtype=np.uint8), 0.0)
    idx.record(1, np.array([97, 98, 99, 0x2603], dtype=np.uint32), 1.0)
    probe = [97, 98, 99, 100, 0x2603]
    for dtype in (np.int64, np.uint32):
        assert idx.match(np.array(probe, dtype=dtype)).tolist() == [4, 3]
    assert idx.match(np.frombuffer(b"abcz", dtype=np.uint8)).tolist() == [3, 3]
    assert idx.sizes().tolist() == [6, 4]
    idx.check_integrity()


def test_token_ids_are_kept_in_32_bits_where_they_fit() -> None:
    idx = PrefixIndex(1)
    idx.record(0, np.array([5, 128_255, 7], dtype=np.int64), 0.0)
    idx.record(0, np.array([2**40, 1], dtype=np.int64), 0.0)  # not a token id: kept as is
    assert idx.root.children[5].key.dtype == np.int32
    assert idx.root.children[2**40].key.dtype == np.int64
    assert idx.match(np.array([5, 128_255, 8], dtype=np.int64)).tolist() == [2]
    assert idx.match(np.array([2**40, 1], dtype=np.int64)).tolist() == [2]
    assert idx.match(np.array([2**40 + 5, 1], dtype=np.int64)).tolist() == [0]
    idx.check_integrity()


def test_the_32_bit_check_at_its_edges() -> None:
    """Non-negative ids are decided from their OR-ed bits, negative ones by their range."""
    top, bottom = 2**31 - 1, -(2**31)
    for values, fits in (([0, top], True), ([0, top + 1], False), ([3, 2**40], False),
                         ([bottom, top], True), ([bottom - 1, 5], False), ([-1, top + 1], False),
                         ([-1, 7], True)):
        assert _fits_int32(np.array(values, dtype=np.int64)) is fits, values
        idx = PrefixIndex(1)
        idx.record(0, np.array(values, dtype=np.int64), 0.0)
        assert idx.root.children[values[0]].key.dtype == (np.int32 if fits else np.int64)
        assert idx.match(np.array(values, dtype=np.int64)).tolist() == [2]


def test_a_split_prefix_owns_its_units() -> None:
    """After a split both halves hold copies of their units, so trimming either frees
    what it held (no view keeps the array the leaf was recorded with alive)."""
    idx = PrefixIndex(1, capacity=6, trim_interval=1.0)
    idx.record(0, a(1, 2, 3, 4, 5, 6), 0.0)
    idx.record(0, a(1, 2, 3, 9), 0.5)  # splits (1..6) at 3
    prefix = idx.root.children[1]
    assert prefix.key.tolist() == [1, 2, 3] and prefix.key.base is None
    assert prefix.children[4].key.tolist() == [4, 5, 6] and prefix.children[4].key.base is None
    idx.record(0, a(1, 2, 3, 9), 1.0)  # the trim: (4, 5, 6), the oldest leaf, goes
    assert idx.match(a(1, 2, 3, 4)).tolist() == [3]
    assert [c.key.base is None for c in prefix.children.values()] == [True]
    idx.check_integrity()
