"""End to end: a toy engine's own evictions, published over ZMQ with losses, leave the
subscriber's index agreeing with the engine's true cache on every probe."""

import random
import time
from collections import OrderedDict

import pytest

pytest.importorskip("zmq")
pytest.importorskip("msgspec")

from kvroute.events import BlockIndex, BlockRemoved, BlockStored, EventPublisher, EventSubscriber


class ToyEngine:
    """A vLLM-like prefix cache: full blocks keyed by a chained hash, LRU eviction of any
    block the current request does not use (children may outlive their parent), one
    BlockStored per request's new blocks and one BlockRemoved per eviction."""

    def __init__(self, capacity, block_size):
        self.capacity, self.bs = capacity, block_size
        self.held = OrderedDict()  # hash -> None, least recently used first

    def hashes(self, prompt):
        out, parent = [], None
        for i in range(len(prompt) // self.bs):
            parent = hash((parent, tuple(prompt[i * self.bs:(i + 1) * self.bs])))
            out.append(parent)
        return out

    def cached_tokens(self, prompt):
        """The engine's own prefix hit: blocks in order until the first one not held."""
        n = 0
        for h in self.hashes(prompt):
            if h not in self.held:
                break
            n += self.bs
        return n

    def serve(self, prompt):
        hashes = self.hashes(prompt)
        hit = self.cached_tokens(prompt) // self.bs
        for h in hashes[:hit]:
            self.held.move_to_end(h)
        new = hashes[hit:][:self.capacity - hit]
        events = []
        while len(self.held) + len(new) > self.capacity:
            victim = next(h for h in self.held if h not in hashes[:hit])
            del self.held[victim]
            events.append(BlockRemoved((victim,)))
        if new:
            for h in new:
                self.held[h] = None
            events.append(BlockStored(tuple(new), hashes[hit - 1] if hit else None,
                                      tuple(prompt[hit * self.bs:(hit + len(new)) * self.bs]),
                                      self.bs))
        return events


def test_index_agrees_with_the_engine_after_its_evictions():
    """150 requests over 6 shared prefixes in a 20-block cache, one batch in 10 lost on
    the wire: the index equals the engine's cache and every probe matches exactly."""
    rng = random.Random(3)
    systems = [[rng.randrange(50) for _ in range(12)] for _ in range(6)]
    prompts = [rng.choice(systems) + [rng.randrange(4) for _ in range(rng.randrange(11))]
               for _ in range(150)]
    engine = ToyEngine(capacity=20, block_size=4)
    with EventPublisher(wire="vllm") as pub:
        sub = EventSubscriber(pub.endpoint, replay_endpoint=pub.replay_endpoint)
        index = BlockIndex()
        index.apply_all(sub.poll(0))
        assert pub.wait_subscribed(1, 5.0)
        for prompt in prompts:
            pub.publish(engine.serve(prompt), send=rng.random() > 0.1)
        pub.publish([])  # a last batch, so a loss at the end is detected too
        deadline = time.monotonic() + 5.0
        while sub.last_seq != pub.next_seq - 1:
            assert time.monotonic() < deadline, sub.counters()
            index.apply_all(sub.poll(0.05))
        assert sub.in_sync and sub.stats.lost == 0 and sub.stats.gaps > 0
        sub.close()
    assert index.hashes() == set(engine.held)
    assert index.stats.removed > 100 and index.stats.unknown_removals == 0
    probes = prompts + [p[:k] for p in systems for k in range(13)]
    agree = [index.match(p) == engine.cached_tokens(p) for p in probes]
    assert all(agree) and sum(engine.cached_tokens(p) > 0 for p in probes) > 50
