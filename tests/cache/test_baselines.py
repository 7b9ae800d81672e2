"""The engines' other policies as baselines: lfu, slru (SGLang), sae (vLLM CPU tier) and
block_lru (vLLM's GPU prefix cache)."""

from kvroute.cache import RadixCache, make_policy


def cache_with(name, capacity=12):
    return RadixCache(capacity, make_policy(name, seed=0))


def serve(cache, seq, now):
    cache.match(seq, now=now)
    cache.insert(seq, now=now)


def leaves(cache):
    return sorted(tuple(s.tolist()) for s in cache.cached_sequences())


def test_lfu_evicts_fewest_hits_then_oldest():
    c = cache_with("lfu")
    serve(c, [1, 1, 1, 1], 0)
    serve(c, [2, 2, 2, 2], 1)
    serve(c, [3, 3, 3, 3], 2)
    for t in (3, 4):
        serve(c, [1, 1, 1, 1], t)  # two hits
    serve(c, [2, 2, 2, 2], 5)  # one hit, the most recent access
    serve(c, [4, 4, 4, 4], 6)  # over capacity: the leaf with 0 hits goes
    assert leaves(c) == [(1,) * 4, (2,) * 4, (4,) * 4]
    serve(c, [5, 5, 5, 5], 7)  # now 4 (0 hits) goes, then between 1 (2 hits) and 2 (1)
    assert leaves(c) == [(1,) * 4, (2,) * 4, (5,) * 4]
    c.evict(4)  # 5 has 0 hits
    c.evict(4)  # 2 has fewer hits than 1, though more recent
    assert leaves(c) == [(1,) * 4]


def test_slru_protects_after_the_first_hit_only():
    """Unlike lfu, slru does not count hits beyond the first: 2 (one hit, older access)
    goes before 1 (two hits) in lfu, but 1 (older) goes first in slru."""
    c = cache_with("slru")
    serve(c, [1, 1, 1, 1], 0)
    serve(c, [2, 2, 2, 2], 1)
    serve(c, [1, 1, 1, 1], 2)
    serve(c, [1, 1, 1, 1], 3)
    serve(c, [2, 2, 2, 2], 4)
    serve(c, [3, 3, 3, 3], 5)  # probationary
    c.evict(4)
    assert leaves(c) == [(1,) * 4, (2,) * 4]  # the probationary one went first
    c.evict(4)
    assert leaves(c) == [(2,) * 4]  # then the older protected one, despite its hits
    lfu = cache_with("lfu")
    for t, s in enumerate([[1] * 4, [2] * 4, [1] * 4, [1] * 4, [2] * 4]):
        serve(lfu, s, t)
    lfu.evict(4)
    assert leaves(lfu) == [(1,) * 4]


def test_sae_ghost_popularity_and_admission():
    """An evicted span's hits come back with it; a never-seen span is admitted without
    the depth bonus, so it goes before an equally old proven one."""
    c = RadixCache(100, make_policy("sae", {"hit_weight": "10", "depth_weight": "1000"}))
    serve(c, [1] * 4, 0)
    for t in (1, 2, 3):
        serve(c, [1] * 4, t)
    node = next(iter(c.root.children.values()))
    assert node.aux == 3
    c.evict(4)
    assert c.total == 0
    serve(c, [1] * 4, 4)  # comes back with its popularity
    assert next(iter(c.root.children.values())).aux == 3
    serve(c, [2] * 4, 5)  # new: on probation, score 5 < 4 + 30 + 1000
    c.evict(4)
    assert leaves(c) == [(1,) * 4]
    c.check_integrity()


def test_block_lru_frees_exactly_the_deficit_from_the_oldest_tail():
    """Over capacity by one token, block_lru trims the oldest leaf's last token where
    SGLang's lru, asked for the whole allocation, drops whole leaves."""
    c, lru = cache_with("block_lru", 10), cache_with("lru", 10)
    for cache in (c, lru):
        serve(cache, [1, 2, 3, 4], 0)
        serve(cache, [5, 6, 7], 1)
        serve(cache, [8, 9, 10, 11], 2)  # 11 tokens in a cache of 10
    assert leaves(c) == [(1, 2, 3), (5, 6, 7), (8, 9, 10, 11)]
    assert leaves(lru) == [(5, 6, 7), (8, 9, 10, 11)]  # asked for 4 (the allocation)
    assert c.evict(5) == 5  # the rest of [1, 2, 3], then the tail of [5, 6, 7]
    assert leaves(c) == [(5,), (8, 9, 10, 11)]


def test_block_lru_reaches_a_parent_after_its_last_child():
    c = cache_with("block_lru", 100)
    serve(c, [1, 2, 3, 4], 0)
    serve(c, [1, 2, 5, 6], 1)  # [1, 2] becomes a parent
    serve(c, [7, 8], 2)
    assert c.evict(3) == 3  # [3, 4] (oldest), then [5, 6]'s last token
    assert leaves(c) == [(1, 2, 5), (7, 8)]
    serve(c, [7, 8], 3)
    assert c.evict(2) == 2  # [5], then [1, 2]'s last token: it is a leaf, older than [7, 8]
    assert leaves(c) == [(1,), (7, 8)]


def test_block_lru_rounds_up_to_a_page():
    c = RadixCache(100, make_policy("block_lru"), page_size=2)
    c.insert([1, 2, 3, 4, 5, 6], now=0)
    c.insert([7, 8], now=1)
    assert c.evict(3) == 4  # two pages of the oldest leaf
    assert sorted(tuple(s.tolist()) for s in c.cached_sequences()) == [(1, 2), (7, 8)]
