"""The emulated engine's events: a radix cache's own evictions, turned into vLLM block
events, leave a BlockIndex agreeing with the cache on every probe (rounded down to whole
blocks), for every online eviction policy, including through ZMQ and a cache flush."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("zmq")
pytest.importorskip("msgspec")

from kvroute.cache import RadixCache, make_policy
from kvroute.cache.eviction.registry import EVICTION
from kvroute.events import BlockIndex, EventPublisher, EventSubscriber
from kvroute.events.model import AllBlocksCleared, BlockStored
from kvroute.events.radix_blocks import RadixBlocks


def _prompts(rng: np.random.Generator, n: int) -> list[np.ndarray]:
    """Prompts sharing a few system prefixes, with branching tails (evictions happen)."""
    systems = [rng.integers(0, 50, int(rng.integers(5, 70))) for _ in range(6)]
    out = []
    for _ in range(n):
        sys_ = systems[int(rng.integers(len(systems)))]
        tail = rng.integers(0, 50, int(rng.integers(0, 60)))
        out.append(np.concatenate([sys_, tail]).astype(np.int64))
    return out


def _wire(cache: RadixCache, blocks: RadixBlocks, sink: list) -> None:
    def listener(ev):
        got = blocks.convert(ev)
        if got is not None:
            sink.append(got)
    cache.subscribe(listener)


@pytest.mark.parametrize("policy", EVICTION.names(needs_future=False))
def test_index_agrees_with_the_cache_after_its_own_evictions(policy: str) -> None:
    rng = np.random.default_rng(7)
    bs = 4
    cache = RadixCache(300, make_policy(policy, seed=3))
    blocks, index, events = RadixBlocks(bs, seed=5), BlockIndex(), []
    _wire(cache, blocks, events)
    probes = agree = 0
    for t, p in enumerate(_prompts(rng, 400)):
        cache.insert(p, now=float(t))
        index.apply_all(events)
        events.clear()
        for q in [*_prompts(rng, 3), p]:
            probes += 1
            agree += index.match(q.tolist()) == cache.peek(q) // bs * bs
    assert index.stats.removed > 0 and index.stats.unknown_removals == 0
    assert agree == probes  # 100% of probes


def test_hashes_are_chained_and_deterministic() -> None:
    a, b = RadixBlocks(2, seed=1), RadixBlocks(2, seed=1)
    path = np.arange(6, dtype=np.int64)
    assert a.chain(path, 3) == b.chain(path, 3)
    assert a.chain(path, 3) != RadixBlocks(2, seed=2).chain(path, 3)
    other = np.array([9, 9, 2, 3, 4, 5], dtype=np.int64)  # same 2nd block, other parent
    assert a.chain(path, 2)[1] != a.chain(other, 2)[1]


def test_a_stored_span_starting_inside_a_block_publishes_that_whole_block() -> None:
    cache = RadixCache(100, make_policy("lru"))
    blocks, got = RadixBlocks(4), []
    _wire(cache, blocks, got)
    cache.insert(np.arange(6))  # blocks 0 (tokens 0-3); 4, 5 are a partial block
    cache.insert(np.arange(10))  # span 6..9: block 1 (4..7) and nothing of 8, 9
    first, second = got
    assert isinstance(first, BlockStored) and first.token_ids == (0, 1, 2, 3)
    assert isinstance(second, BlockStored) and second.token_ids == (4, 5, 6, 7)
    assert second.parent_block_hash == first.block_hashes[0]
    cache.clear()
    assert isinstance(got[-1], AllBlocksCleared)


def test_over_zmq_with_a_flush() -> None:
    rng = np.random.default_rng(11)
    bs = 4
    cache = RadixCache(250, make_policy("lru"))
    blocks, pending = RadixBlocks(bs), []
    _wire(cache, blocks, pending)
    with EventPublisher() as pub, EventSubscriber(pub.endpoint,
                                                  replay_endpoint=pub.replay_endpoint) as sub:
        index = BlockIndex()
        index.apply_all(sub.poll(0.0))  # start replay (empty)
        assert pub.wait_subscribed()
        prompts = _prompts(rng, 200)
        for t, p in enumerate(prompts):
            cache.insert(p, now=float(t))
            if t == 120:
                cache.clear()
            pub.publish(pending)
            pending.clear()
        want = pub.next_seq - 1
        while sub.last_seq != want:
            index.apply_all(sub.poll(1.0))
        assert sub.in_sync
        for q in prompts + _prompts(rng, 50):
            assert index.match(q.tolist()) == cache.peek(q) // bs * bs
