"""What the Mooncake trace's reuse looks like, and what online signals could see of it
(issue 13: why the offline optimum gets about 5x lru at 1% of the unique blocks).

    PYTHONPATH=src python benchmarks/mooncake_reuse.py \
        --trace ../shared/traces/mooncake_synthetic_trace.jsonl

Prints: the prefix groups (requests that share their first block) and how many are
seen once; the optimum's, lru's and learned's block hits by the distance (in requests)
to the block's previous use; the chance that a block is used again within the stack
distance of a 1/5/10% cache, by how often it was used before; hindsight top-K
frequency sets (the K blocks used most over the whole second half, preloaded) against
the top-K of the first half on the same requests (is popularity stationary?); and a
frequency policy with perfect per-block memory (a block's id is its position here,
so a dict of counts is exact): evict the leaf whose last block has the fewest uses
(capped at C), oldest first; and the same order by counts that know the future (each
block's uses over the whole trace, or those still to come): how far even a perfect
frequency predictor gets. These are bound-style probes for block streams, not policies
for token streams. Everything is deterministic; about 15 s.
"""

from __future__ import annotations

import argparse
import bisect
import heapq
import os
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np

from kvroute.cache import RadixCache, make_policy
from kvroute.cache.eviction.policy import EvictionPolicy
from kvroute.workloads.cache_streams import parse_capacities, trace_stream

TRACE = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "traces",
                     "mooncake_synthetic_trace.jsonl")


class ScoreProbe(EvictionPolicy):
    """Probe: the lowest ``score(block, now)`` of the leaf's last block first, then the
    oldest last access; one page at a time. ``now`` is the request index (``hits_per_request``
    sets it). A score must not change while its block sits in the heap, except as time
    passes for every block alike."""

    name = "score_probe"  # not registered

    def __init__(self, score: Callable[[int, int], float]) -> None:
        self.score, self.seq, self.now = score, 0, 0
        self.heap: list[tuple[float, float, int, Any]] = []

    def _push(self, node: Any) -> None:
        if self.is_candidate(node):
            self.seq += 1
            node.slot = self.seq
            key = self.score(int(node.key[-1]), self.now)
            heapq.heappush(self.heap, (key, node.last_access, self.seq, node))

    def on_created(self, leaf: Any) -> None:
        self._push(leaf)

    def on_access(self, node: Any, hit: bool) -> None:
        self._push(node)

    def on_split(self, prefix: Any, suffix: Any, in_match: bool) -> None:
        self._push(suffix)

    def on_candidacy(self, node: Any) -> None:
        self._push(node)

    def evict(self, n: int) -> int:
        done = 0
        while done < n and self.heap:
            *_, seq, node = heapq.heappop(self.heap)
            if node.slot != seq or not self.is_candidate(node):
                continue
            self.cache.trim_leaf(node, 1)
            done += 1
            if node.parent is not None:
                self._push(node)
        return done


def hits_per_request(prompts: list[np.ndarray], cap: int, name: str,
                     score: Callable[[int, int], float] | None = None) -> list[int]:
    """Per request, its hit under policy ``name``, or under ``ScoreProbe(score)``."""
    probe = ScoreProbe(score) if score is not None else None
    policy = (probe if probe is not None else
              make_policy(name, requests=prompts) if name == "optimal" else
              make_policy(name, seed=1))
    cache = RadixCache(cap, policy)
    out = []
    for j, p in enumerate(prompts):
        if probe is not None:
            probe.now = j
        out.append(cache.match(p, now=j).hit)
        cache.insert(p, now=j)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trace", default=TRACE)
    args = ap.parse_args()
    stream = trace_stream(args.trace, "block")
    prompts = stream.prompts
    reqs = [p.tolist() for p in prompts]
    total = sum(map(len, reqs))
    caps = parse_capacities("1%,5%,10%", stream.unique_units)
    groups = Counter(r[0] for r in reqs if r)
    print(f"{len(reqs):,} requests, {total:,} blocks, {stream.unique_units:,} unique; "
          f"{len(groups):,} prefix groups (first block), {sum(v == 1 for v in groups.values()):,}"
          " of them seen once")

    def bucket(d: int) -> int:
        return min(int(np.log2(d)), 11)

    # block hits by log2 distance (requests) to the block's previous use
    rows = {}
    for name in ("optimal", "lru", "learned"):
        hits = hits_per_request(prompts, caps[0], name)
        last: dict[int, int] = {}
        dist: Counter[int] = Counter()
        for j, r in enumerate(reqs):
            for d, b in enumerate(r):
                if d < hits[j]:
                    dist[bucket(j - last[b])] += 1
            for b in r:
                last[b] = j
        rows[name] = (sum(hits) / total, dist)
    print(f"\nblock hits at 1% ({caps[0]} blocks) by distance to the previous use, "
          "requests [2^k, 2^(k+1)):")
    print("k        " + " ".join(f"{k:>6}" for k in range(12)))
    for name, (rate, dist) in rows.items():
        counts = " ".join(f"{dist[k]:>6}" for k in range(12))
        print(f"{name:<9}{counts}   hit rate {rate:.4f}")

    # P(next use within the stack distance of each cache), by uses so far
    seq = [b for r in reqs for b in r]
    bit = [0] * (len(seq) + 1)

    def add(i: int, v: int) -> None:
        i += 1
        while i <= len(seq):
            bit[i] += v
            i += i & -i

    def upto(i: int) -> int:
        s, i = 0, i + 1
        while i > 0:
            s += bit[i]
            i -= i & -i
        return s

    prev_stack: list[int | None] = [None] * len(seq)
    where: dict[int, int] = {}
    for t, b in enumerate(seq):
        if b in where:
            prev_stack[t] = upto(t - 1) - upto(where[b])
            add(where[b], -1)
        where[b] = t
        add(t, 1)
    nxt: list[int | None] = [None] * len(seq)
    later: dict[int, int] = {}
    for t in range(len(seq) - 1, -1, -1):
        if seq[t] in later:
            nxt[t] = prev_stack[later[seq[t]]]
        later[seq[t]] = t
    uses: Counter[int] = Counter()
    table: dict[int, list[int]] = {}
    for t, b in enumerate(seq):
        row = table.setdefault(min(uses[b], 4), [0, 0, 0, 0])
        row[0] += 1
        for i, c in enumerate(caps):
            row[i + 1] += nxt[t] is not None and nxt[t] < c  # type: ignore[operator]
        uses[b] += 1
    print("\nuses so far -> P(used again within the stack distance of a 1% / 5% / 10% cache)")
    for k in sorted(table):
        row = table[k]
        label = f"{k}+" if k == 4 else str(k)
        print(f"  {label:>2}: {row[0]:>6} accesses  "
              + " / ".join(f"{x / row[0]:.3f}" for x in row[1:]))

    # is popularity stationary? top-K sets on the second half
    half = len(reqs) // 2
    first = Counter(b for r in reqs[:half] for b in r)
    second = Counter(b for r in reqs[half:] for b in r)
    n2 = sum(len(r) for r in reqs[half:])

    def preloaded(keep: set[int]) -> float:
        hit = 0
        for r in reqs[half:]:
            d = 0
            while d < len(r) and r[d] in keep:
                d += 1
            hit += d
        return hit / n2

    print("\nsecond half, K blocks preloaded: hindsight top-K of the second half vs top-K "
          "of the first half")
    for c in caps:
        print(f"  K={c:>5}: {preloaded({b for b, _ in second.most_common(c)}):.4f} vs "
              f"{preloaded({b for b, _ in first.most_common(c)}):.4f}")

    # a block id is its position here, so per-block counts are exact
    times: dict[int, list[int]] = {}
    for j, r in enumerate(reqs):
        for b in r:
            times.setdefault(b, []).append(j)

    def so_far(cap_uses: int) -> Callable[[int, int], float]:
        return lambda b, now: min(cap_uses, bisect.bisect_right(times[b], now))

    def probe_row(label: str, score: Callable[[int, int], float]) -> None:
        rates = [sum(hits_per_request(prompts, c, "", score)) / total for c in caps]
        print(f"  {label:<42}" + " ".join(
            f"{r:.4f} ({r / b:.2f}x)" for r, b in zip(rates, base, strict=True)))

    lru = [sum(hits_per_request(prompts, c, "lru")) / total for c in caps]
    rlt = [sum(hits_per_request(prompts, c, "rlt")) / total for c in caps]
    base = [max(a, b) for a, b in zip(lru, rlt, strict=True)]
    print("\nfrequency probes: the fewest uses of the leaf's last block first, then the oldest "
          "(1% / 5% / 10%)")
    print(f"  {'max(lru, rlt), seed 1':<42}" + " ".join(f"{x:.4f}" for x in base))
    for cap_uses in (2, 3, 5, 10, 1 << 30):
        label = "inf" if cap_uses > 1000 else str(cap_uses)
        probe_row(f"uses so far, capped at {label}", so_far(cap_uses))
    print("  with knowledge of the future (bounds for a frequency predictor, not policies):")
    probe_row("uses over the whole trace", lambda b, now: len(times[b]))
    probe_row("uses still to come", lambda b, now: len(times[b])
              - bisect.bisect_right(times[b], now))


if __name__ == "__main__":
    main()
