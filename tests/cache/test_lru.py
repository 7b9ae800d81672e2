"""Leaf-LRU on hand-built trees: exact eviction order."""

from kvroute.cache import RadixCache, make_policy


def build(capacity=100):
    c = RadixCache(capacity, make_policy("lru"))
    c.insert([1, 2, 3], now=1)  # leaf [3] under [1,2]
    c.insert([1, 2, 4], now=2)  # leaf [4]
    c.insert([5, 6], now=3)  # leaf [5,6]
    return c


def test_evicts_oldest_leaf_first_whole_nodes():
    """The oldest leaf goes first, whole, even when fewer tokens were asked for."""
    c = build()
    assert c.evict(1) == 1  # [3] (t=1)
    assert c.match([1, 2, 3], now=4).hit == 2  # touches [1,2], not its leaf [4]
    assert c.evict(1) == 1  # [4] (t=2)
    assert c.evict(1) == 2  # [5,6] (t=3) is older than [1,2] (t=4), and goes whole
    assert c.match([5, 6], now=5).hit == 0 and c.match([1, 2], now=6).hit == 2
    c.check_integrity()


def test_access_refreshes_and_locked_leaves_are_skipped():
    """A matched leaf becomes youngest; a locked leaf is never chosen."""
    c = build()
    c.match([1, 2, 3], now=10)
    h = c.match([5, 6], now=11).handle
    c.lock(h)
    assert c.evict(1) == 1  # [4] is now the oldest unlocked leaf
    assert c.match([1, 2, 4], now=12).hit == 2
    c.check_integrity()


def test_parent_promoted_when_last_child_goes():
    """When both children of [1,2] go, [1,2] itself becomes a candidate at its own age."""
    c = build()
    c.match([5, 6], now=20)
    freed = c.evict(4)  # [3] (1 token), [4] (1), then [1,2] (2): parent older than [5,6]
    assert freed == 4
    assert c.match([1], now=21).hit == 0 and c.match([5, 6], now=22).hit == 2
    c.check_integrity()


def test_nothing_to_evict_when_all_locked():
    """evict frees nothing when every leaf is locked."""
    c = build()
    for seq in ([1, 2, 3], [1, 2, 4], [5, 6]):
        c.lock(c.match(seq).handle)
    assert c.evict(10) == 0
    c.check_integrity()
