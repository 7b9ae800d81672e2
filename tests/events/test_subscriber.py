"""Subscribers on real ZMQ sockets on loopback, against kvroute's publisher."""

import asyncio
import random
import time

import pytest

pytest.importorskip("zmq")
pytest.importorskip("msgspec")

import zmq

from kvroute.events import (
    AllBlocksCleared,
    AsyncEventSubscriber,
    BlockIndex,
    BlockRemoved,
    BlockStored,
    EventBatch,
    EventPublisher,
    EventSubscriber,
    encode_batch,
)
from kvroute.events.wire import pack_seq

from .fixtures import encode

DEADLINE = 5.0


def stored(h, parent=None, tokens=None):
    """One block of two tokens with hash ``h``."""
    return BlockStored((h,), parent, tokens or (h, h + 1), 2)


def collect(sub, until_seq):
    """Poll until ``sub`` has applied batch ``until_seq``; the events it returned."""
    out = []
    deadline = time.monotonic() + DEADLINE
    while sub.last_seq is None or sub.last_seq < until_seq:
        assert time.monotonic() < deadline, f"stuck: {sub.counters()}"
        out += sub.poll(0.05)
    return out


def start(pub, engine="vllm", **kw):
    """A subscriber that ran its start replay and that ``pub`` hears subscribed, and the
    events of its first poll (the start replay's)."""
    kw.setdefault("replay_endpoint", pub.replay_endpoint)
    sub = EventSubscriber(pub.endpoint, engine=engine, **kw)
    first = sub.poll(0)
    assert pub.wait_subscribed(pub.subscriptions + 1, DEADLINE)
    return sub, first


def connect(pub, engine="vllm", **kw):
    """A started subscriber whose start replay found nothing."""
    sub, first = start(pub, engine, **kw)
    assert first == []
    return sub


@pytest.fixture
def pub():
    p = EventPublisher(wire="vllm")
    yield p
    p.close()


@pytest.mark.parametrize("wire, engine", [("vllm", "vllm"), ("vllm-positional", "vllm"),
                                          ("sglang", "sglang")])
def test_live_stream_in_order(wire, engine):
    """Batches arrive once, in order, in every wire format; the start replay ran."""
    with EventPublisher(wire=wire) as p:
        sub = connect(p, engine)
        batches = [[stored(1)], [stored(2, 1), BlockRemoved((1,))], [AllBlocksCleared()]]
        for events in batches:
            p.publish(events)
        assert collect(sub, 2) == [e for b in batches for e in b]
        c = sub.counters()
        assert (c["replays"], c["gaps"], c["duplicates"], c["lost"]) == (1, 0, 0, 0)
        assert c["events"] == {"BlockStored": 2, "BlockRemoved": 1, "AllBlocksCleared": 1}
        assert sub.in_sync
        sub.close()


def test_lost_message_is_filled_by_replay(pub):
    """A batch lost on the wire is detected by the next one's sequence and replayed."""
    sub = connect(pub)
    pub.publish([stored(1)])
    pub.publish([stored(2, 1)], send=False)
    pub.publish([stored(3, 2)])
    assert collect(sub, 2) == [stored(1), stored(2, 1), stored(3, 2)]
    assert (sub.stats.gaps, sub.stats.replays, sub.stats.duplicates, sub.stats.lost) == \
        (1, 2, 1, 0)
    assert sub.in_sync
    sub.close()


def test_start_replay_delivers_history(pub):
    """A subscriber that starts late gets everything buffered since sequence 0."""
    for h in range(1, 6):
        pub.publish([stored(h, h - 1 or None)])
    sub, first = start(pub)
    assert first == [stored(h, h - 1 or None) for h in range(1, 6)]
    assert sub.last_seq == 4 and sub.in_sync
    sub.close()


def test_reordered_or_repeated_live_message_rebuilds_by_replay(pub):
    """A live sequence going backwards is taken for a restart: the view is cleared and
    rebuilt from the publisher's buffer, and ends exact."""
    sub = connect(pub)
    index = BlockIndex()
    first = encode_batch(EventBatch(1.0, (stored(1),), 0))
    pub.publish_payload(first)
    pub.publish([stored(2, 1)])
    index.apply_all(collect(sub, 1))
    pub.send_frames([b"", pack_seq(0), first])  # seq 0 again, after seq 1
    events = []
    deadline = time.monotonic() + DEADLINE
    while not sub.stats.restarts:  # a poll that meets the restart also runs its replay
        assert time.monotonic() < deadline
        events += sub.poll(0.05)
    index.apply_all(events)
    assert events == [AllBlocksCleared(), stored(1), stored(2, 1)]
    assert index.match([1, 2, 2, 3]) == 4 and len(index) == 2
    assert sub.stats.restarts == 1 and sub.in_sync
    sub.close()


def program(rng, n_batches):
    """Batches of stores (chains of up to 3 blocks) and removals of held hashes."""
    held, batches, next_hash = [], [], 1
    for _ in range(n_batches):
        events = []
        for _ in range(rng.randint(1, 3)):
            if held and rng.random() < 0.3:
                h = held.pop(rng.randrange(len(held)))
                events.append(BlockRemoved((h,)))
            else:
                parent = rng.choice(held) if held and rng.random() < 0.5 else None
                hashes = tuple(range(next_hash, next_hash + rng.randint(1, 3)))
                next_hash += len(hashes)
                tokens = tuple(rng.randrange(5) for _ in range(2 * len(hashes)))
                events.append(BlockStored(hashes, parent, tokens, 2))
                held += hashes
        batches.append(events)
    return batches


def probes(index_events):
    """Every chain of stored tokens from the root, as prompts."""
    return [list(e.token_ids) for e in index_events
            if isinstance(e, BlockStored) and e.parent_block_hash is None]


def test_subscriber_restart_rebuilds_its_index_by_replay(pub):
    """A new subscriber (a router restart) rebuilds the same index from replay alone,
    and one resuming after a kept sequence gets only what followed."""
    batches = program(random.Random(7), 30)
    first = connect(pub)
    for events in batches:
        pub.publish(events)
    before = BlockIndex()
    before.apply_all(collect(first, 29))
    first.close()
    again, first_events = start(pub)
    after = BlockIndex()
    after.apply_all(first_events)
    assert again.last_seq == 29 and again.in_sync
    assert after.hashes() == before.hashes() and len(after) == len(before) > 0
    flat = [e for b in batches for e in b]
    assert [after.match(p) for p in probes(flat)] == [before.match(p) for p in probes(flat)]
    resumed = connect(pub, start_seq=30)
    pub.publish([stored(1000)])
    assert collect(resumed, 30) == [stored(1000)]
    assert resumed.stats.duplicates == 0 and resumed.in_sync
    for s in (again, resumed):
        s.close()


def bind_again(endpoint, replay_endpoint):
    """A publisher on the same addresses (the restarted engine), once the port is free."""
    deadline = time.monotonic() + DEADLINE
    while True:
        try:
            return EventPublisher(endpoint, replay_endpoint=replay_endpoint)
        except zmq.ZMQError as e:
            if e.errno != zmq.EADDRINUSE or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def test_engine_restart_clears_and_resynchronises():
    """The engine restarts (sequence back to 0): the index drops its old blocks and holds
    exactly what the new engine stored, replayed from 0."""
    old = EventPublisher()
    sub = connect(old)
    index = BlockIndex()
    for h in (1, 2, 3):
        old.publish([stored(h)])
    index.apply_all(collect(sub, 2))
    endpoint, replay = old.endpoint, old.replay_endpoint
    old.close()
    new = bind_again(endpoint, replay)
    deadline = time.monotonic() + DEADLINE
    while not new.wait_subscribed(1, 0.01):  # the SUB resubscribes when it is used
        assert time.monotonic() < deadline
        assert sub.poll(0.01) == []
    new.publish([stored(7)], send=False)  # lost while the subscriber reconnected
    new.publish([stored(8, 7)])
    deadline = time.monotonic() + DEADLINE
    while sub.stats.restarts == 0 or sub.last_seq != 1:
        assert time.monotonic() < deadline, sub.counters()
        index.apply_all(sub.poll(0.05))
    assert index.hashes() == {7, 8} and index.match([7, 8, 8, 9]) == 4
    assert (sub.stats.restarts, sub.stats.lost) == (1, 0) and sub.in_sync
    sub.close()
    new.close()


def test_engine_all_blocks_cleared(pub):
    """The engine's AllBlocksCleared empties the index; later stores are kept."""
    sub = connect(pub)
    index = BlockIndex()
    pub.publish([stored(1), stored(2, 1)])
    pub.publish([AllBlocksCleared()])
    pub.publish([stored(5)])
    index.apply_all(collect(sub, 2))
    assert index.hashes() == {5} and index.match([1, 2, 2, 3]) == 0
    sub.close()


def test_garbage_is_counted_and_skipped(pub):
    """Bad frames, an undecodable payload and bad events are counted, never fatal; the
    good events still apply, and a later clear brings the view back in sync."""
    sub = connect(pub)
    pub.send_frames([b"junk"])
    pub.send_frames([b"", b"1234567", b"x"])
    pub.publish_payload(b"\xc1\xc1 not msgpack")
    pub.publish_payload(encode([1.0, [["BlockMoved", [1]], ["BlockStored", "x"],
                                      ["BlockRemoved", [9]]]]))
    pub.publish([stored(1)])
    assert collect(sub, 2) == [BlockRemoved((9,)), stored(1)]
    c = sub.counters()
    assert c["bad_frames"] == 2 and c["batches"] == 3
    assert c["decode_errors"] == {"batch": 1, "unknown_kind": 1, "bad_block_stored": 1}
    assert not sub.in_sync
    pub.publish([AllBlocksCleared()])
    collect(sub, 3)
    assert sub.in_sync
    sub.close()


def test_without_replay_socket_losses_are_counted(pub):
    """Without a replay endpoint a gap cannot be filled: counted as lost, out of sync."""
    sub = connect(pub, replay_endpoint=None)
    pub.publish([stored(1)])
    pub.publish([stored(2)], send=False)
    pub.publish([stored(3)])
    assert collect(sub, 2) == [stored(1), stored(3)]
    assert (sub.stats.gaps, sub.stats.lost, sub.stats.replays) == (1, 1, 0)
    assert not sub.in_sync
    sub.close()


def test_replay_timeout_is_counted():
    """A replay socket that never answers: the replay times out, the live stream goes on."""
    ctx = zmq.Context.instance()
    mute = ctx.socket(zmq.ROUTER)
    mute.setsockopt(zmq.LINGER, 0)
    mute.bind("tcp://127.0.0.1:*")
    with EventPublisher(replay_endpoint=None) as p:
        sub = connect(p, replay_endpoint=mute.getsockopt_string(zmq.LAST_ENDPOINT),
                      replay_timeout=0.2)
        assert sub.stats.replay_failures == 1 and not sub.in_sync
        p.publish([stored(1)])
        assert collect(sub, 0) == [stored(1)]
        sub.close()
    mute.close(linger=0)


def test_lag_is_measured_on_the_injected_clock(pub):
    """lag_s is clock() minus the batch's timestamp."""
    sub = connect(pub, clock=lambda: 1000.0)
    pub.publish([stored(1)], ts=990.5)
    collect(sub, 0)
    assert sub.stats.lag_s == 9.5
    sub.close()


@pytest.mark.asyncio
async def test_async_subscriber_fills_gaps():
    """The asyncio subscriber follows the same protocol: start replay, gap, replay."""
    with EventPublisher() as p:
        sub = AsyncEventSubscriber(p.endpoint, replay_endpoint=p.replay_endpoint)
        assert await sub.poll(0) == []
        assert p.wait_subscribed(1, DEADLINE)
        p.publish([stored(1)])
        p.publish([stored(2, 1)], send=False)
        p.publish([stored(3, 2)])
        out = []
        deadline = time.monotonic() + DEADLINE
        while sub.last_seq != 2:
            assert time.monotonic() < deadline, sub.counters()
            out += await sub.poll(0.05)
            await asyncio.sleep(0)
        assert out == [stored(1), stored(2, 1), stored(3, 2)]
        assert (sub.stats.gaps, sub.stats.replays, sub.stats.lost) == (1, 2, 0)
        assert sub.in_sync
        sub.close()
