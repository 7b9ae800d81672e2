"""The tree mechanism: match, insert, split, locks, sizes, events, input errors."""

import numpy as np
import pytest

from kvroute.cache import KVEvent, RadixCache, make_policy
from kvroute.errors import ConfigError, IntegrityError


def test_match_and_insert_count_tokens_and_split_edges():
    """insert returns new tokens; a match ending inside an edge splits it at the hit."""
    c = RadixCache(100, make_policy("lru"))
    assert c.insert([1, 2, 3, 4]) == 4
    assert c.insert([1, 2, 5]) == 1
    assert c.insert([1, 2, 3, 4]) == 0
    r = c.match([1, 2, 3, 9])
    assert r.hit == 3 and r.handle.end == 3
    assert c.match([7]).hit == 0 and c.match([7]).handle is c.root
    assert c.total == 5 and sorted(map(tuple, c.cached_sequences())) == [(1, 2, 3, 4), (1, 2, 5)]
    c.check_integrity()


def test_page_size_counts_whole_pages_in_tokens():
    """With page_size 2 only whole pages are stored and matched; sizes are in tokens."""
    c = RadixCache(100, make_policy("lru"), page_size=2)
    assert c.insert([1, 2, 3, 4, 5]) == 4
    assert c.match([1, 2, 3, 9]).hit == 2
    assert c.match([1, 2, 3, 4, 5, 6]).hit == 4
    assert c.insert([1, 2, 3, 7]) == 2  # a page differing in its 2nd token is a new page
    c.check_integrity()


def test_lock_covers_root_path_and_sizes_stay_exact():
    """Locking a handle pins every node above it; unlock restores the evictable size."""
    c = RadixCache(100, make_policy("lru"))
    c.insert([1, 2, 3, 4])
    c.insert([1, 2, 5, 6])
    h = c.match([1, 2, 3]).handle
    c.lock(h)
    assert c.locked == 3 and c.evictable == 3
    c.lock(h)
    c.unlock(h)
    assert c.locked == 3
    c.unlock(h)
    assert c.locked == 0 and c.evictable == c.total == 6
    with pytest.raises(ConfigError, match="not locked"):
        c.unlock(h)
    c.check_integrity()


def test_insert_beyond_capacity_evicts_to_fit():
    """Between calls the cache never holds more than its capacity."""
    c = RadixCache(5, make_policy("lru"))
    c.insert([1, 2, 3])
    c.insert([4, 5, 6])
    assert c.total <= 5 and c.match([4, 5, 6]).hit == 3
    c.check_integrity()


def test_events_report_stored_and_removed_spans():
    """Subscribers see each stored span with its prefix, and each removed span."""
    c = RadixCache(6, make_policy("lru"))
    seen: list[KVEvent] = []
    c.subscribe(seen.append)
    c.insert([1, 2, 3])
    c.insert([1, 2, 4, 5])
    c.insert([9, 9, 9])  # 8 tokens > 6: the oldest leaf [3] goes (SGLang asks for 3: more)
    kinds = [(e.kind, e.prefix.tolist(), e.tokens.tolist()) for e in seen]
    assert kinds[:2] == [("stored", [], [1, 2, 3]), ("stored", [1, 2], [4, 5])]
    assert kinds[2] == ("stored", [], [9, 9, 9])
    assert ("removed", [1, 2], [3]) in kinds[3:]
    stored = sum(len(e.tokens) for e in seen if e.kind == "stored")
    removed = sum(len(e.tokens) for e in seen if e.kind == "removed")
    assert stored - removed == c.total


def test_bad_input_is_a_clear_error():
    """Wrong shapes, non-integers, bad capacities and stale handles raise ConfigError."""
    c = RadixCache(10, make_policy("lru"))
    with pytest.raises(ConfigError, match="1-D"):
        c.insert(np.zeros((2, 2), dtype=np.int64))
    with pytest.raises(ConfigError, match="integers"):
        c.insert([1.5, 2.0])
    with pytest.raises(ConfigError, match="capacity"):
        RadixCache(-1, make_policy("lru"))
    with pytest.raises(ConfigError, match="page_size"):
        RadixCache(10, make_policy("lru"), page_size=0)
    with pytest.raises(ConfigError, match="unknown eviction policy"):
        make_policy("fifo")
    with pytest.raises(ConfigError, match="make_policy"):
        RadixCache(10, "lru")  # a name is not a policy object
    with pytest.raises(ConfigError, match="backwards"):
        c.match([1], now=5)
        c.match([1], now=4)
    c2 = RadixCache(10, make_policy("lru"))
    c2.insert([1, 2])
    with pytest.raises(ConfigError, match="no longer in this cache"):
        c.lock(c2.match([1, 2]).handle)


def test_clear_drops_everything_unless_locked():
    """clear() empties the cache, and refuses while a request holds a lock."""
    c = RadixCache(10, make_policy("rlt"))
    c.insert([1, 2, 3])
    h = c.match([1, 2]).handle
    c.lock(h)
    with pytest.raises(ConfigError, match="locked"):
        c.clear()
    c.unlock(h)
    c.clear()
    assert c.total == 0 and c.match([1]).hit == 0
    c.check_integrity()


def test_check_integrity_catches_a_corrupted_size():
    """check_integrity fails when a size no longer adds up."""
    c = RadixCache(10, make_policy("lru"))
    c.insert([1, 2, 3])
    c.total += 1
    with pytest.raises(IntegrityError, match="total"):
        c.check_integrity()
