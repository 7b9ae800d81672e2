"""The engines' other policies as baselines: lfu, slru (SGLang) and sae (vLLM CPU tier)."""

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
