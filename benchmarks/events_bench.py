"""KV-event throughput: blocks decoded and applied per second on one core.

A synthetic vLLM-like engine (16-token blocks, shared system prompts, a bounded cache
evicting its oldest blocks) emits one batch per scheduler step: a ``BlockStored`` per
request for its new blocks and, as vLLM does, a ``BlockRemoved`` per evicted block. The
payloads are encoded up front in each wire format; the timed loop is what a subscriber
does per message: ``EventStream.on_live`` (framing, sequencing, decoding) then
``BlockIndex.apply_all``. A block counts once when stored and once when removed.

    python benchmarks/events_bench.py            # about 500,000 blocks per format
    python benchmarks/events_bench.py --quick    # a fifth of that

Target (issue 14): at least 200,000 blocks/s. The best of ``--repeats`` runs is kept.
"""

from __future__ import annotations

import argparse
import random
import time
from collections import deque

from kvroute.events import (
    WIRE_FORMATS,
    BlockIndex,
    BlockRemoved,
    BlockStored,
    EventBatch,
    EventStream,
    KvEvent,
    encode_batch,
    make_decoder,
)
from kvroute.events.wire import pack_seq

ENGINE = {"vllm": "vllm", "vllm-positional": "vllm", "sglang": "sglang"}


def workload(steps: int, seed: int = 0, block_size: int = 16, capacity: int = 20_000,
             requests_per_step: int = 4) -> tuple[list[list[KvEvent]], int]:
    """Batches of events and the number of blocks they store and remove."""
    rng = random.Random(seed)
    systems = [[rng.randrange(32_000) for _ in range(512)] for _ in range(32)]
    held: deque[int] = deque()
    known: set[int] = set()
    batches, blocks, next_hash = [], 0, 1
    for _ in range(steps):
        events: list[KvEvent] = []
        for _ in range(requests_per_step):
            system = rng.randrange(len(systems))
            n_system = len(systems[system]) // block_size
            tokens = systems[system] + [rng.randrange(32_000)
                                        for _ in range(rng.randrange(256, 1024))]
            n = len(tokens) // block_size
            hashes = [system * 1000 + i for i in range(n_system)]
            hashes += list(range(next_hash + 10**6, next_hash + 10**6 + n - n_system))
            next_hash += n - n_system
            first = next((i for i, h in enumerate(hashes) if h not in known), n)
            new = hashes[first:]
            if not new:
                continue
            while len(held) + len(new) > capacity:
                victim = held.popleft()
                known.discard(victim)
                events.append(BlockRemoved((victim,)))
                blocks += 1
            events.append(BlockStored(tuple(new), hashes[first - 1] if first else None,
                                      tuple(tokens[first * block_size:n * block_size]),
                                      block_size))
            held.extend(new)
            known.update(new)
            blocks += len(new)
        batches.append(events)
    return batches, blocks


def run(frames: list[list[bytes]], engine: str) -> float:
    """Seconds to take every message through the stream into an index."""
    stream = EventStream(make_decoder(engine), clock=lambda: 0.0, can_replay=False)
    index = BlockIndex()
    start = time.perf_counter()
    for message in frames:
        index.apply_all(stream.on_live(message))
    elapsed = time.perf_counter() - start
    assert stream.in_sync and index.stats.unknown_removals == 0
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2_000)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    steps = args.steps // 5 if args.quick else args.steps
    batches, blocks = workload(steps)
    events = sum(len(b) for b in batches)
    print(f"{steps} batches, {events} events, {blocks} blocks "
          f"({blocks / events:.1f} per event)")
    print(f"{'wire format':<17}{'MB':>7}{'blocks/s':>12}{'events/s':>11}")
    for wire in WIRE_FORMATS:
        frames = [[b"", pack_seq(seq), encode_batch(EventBatch(0.0, tuple(b), 0), wire)]
                  for seq, b in enumerate(batches)]
        size = sum(len(f[2]) for f in frames) / 1e6
        best = min(run(frames, ENGINE[wire]) for _ in range(args.repeats))
        print(f"{wire:<17}{size:>7.1f}{blocks / best:>12,.0f}{events / best:>11,.0f}")


if __name__ == "__main__":
    main()
