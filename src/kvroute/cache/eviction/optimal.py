"""The offline optimum ("tree Belady"): the hit-rate ceiling for one cache.

Algorithm (service-time.md, "Hit-rate ceilings"): when space is needed, evict the leaf
token whose next use is furthest in the future; ties (possible only between tokens that
are never used again) go to the deeper one. With requests served one at a time and
token granularity this is exactly optimal for the token hit rate: a token's next use can
only grow from a node to its descendants, so the furthest-next-use token is always a leaf
token and the choice never breaks the prefix tree.

Parameters: ``requests``, the whole future sequence of prompts in order. The clock is
the request index: call ``match(prompt_j, now=j)`` and ``insert(..., now=j)`` for
j = 0, 1, ... (``kvroute.cache.ceilings.replay`` does this).

How: the prompts are built into a *future trie* whose edges end at request boundaries,
so all tokens of one edge share their users (the requests that pass through it) and so
one next-use time. Each cached leaf knows where its last token sits in that trie; a lazy
max-heap keyed by (next use, depth) picks the victim, which is trimmed from its tail down
to the edge boundary (or as far as needed) in one step. Next-use times change only for
nodes that a request touches, and those are pushed again, so the heap stays exact.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from kvroute.cache.eviction.leaf_heap import LeafHeap
from kvroute.cache.eviction.policy import EvictionPolicy
from kvroute.cache.eviction.registry import register
from kvroute.errors import ConfigError, IntegrityError

if TYPE_CHECKING:
    from kvroute.cache.radix import Node, RadixCache

__all__ = ["OfflineOptimal"]

Position = tuple["Node", int]  # (future-trie node whose edge holds the depth, depth)


class _Keep(EvictionPolicy):
    """Never evicts: the future trie holds everything."""

    name = "_keep"

    def evict(self, n: int) -> int:
        return 0


@register
class OfflineOptimal(EvictionPolicy):
    name = "optimal"
    needs_future = True
    takes_seed = False
    describe_needs = ("needs the future request sequence (the offline optimum); it is "
                      "reported as a ceiling instead")
    default_request = "deficit"

    def __init__(self, requests: Sequence[Sequence[int] | np.ndarray] | None = None) -> None:
        if requests is None:
            raise ConfigError("the 'optimal' policy needs the future: pass requests=[prompt, ...]"
                              " in the order they will be served")
        self.requests = list(requests)

    def attach(self, cache: RadixCache) -> None:
        super().attach(cache)
        prompts = [cache.page_aligned(r) for r in self.requests]
        # the same tree class as the cache (RunRadixCache when the keys are Runs)
        trie = type(cache)(sum(len(p) for p in prompts) + 1, _Keep(), page_size=cache.page_size)
        for p in prompts:
            trie.insert(p)
        for edge in trie.nodes():
            edge.aux = []
        trie.root.aux = []
        for j, p in enumerate(prompts):  # users of each edge, in request order
            node: Node | None = trie.match(p).handle
            while node is not None:
                node.aux.append(j)
                node = node.parent
        self.trie = trie
        self.horizon = len(prompts)
        self.heap = LeafHeap(self.is_candidate)

    # ---------------------------------------------------------------- the future trie
    def _locate(self, pos: Position, seq: np.ndarray) -> Position:
        """Follow ``seq`` from trie position ``pos`` as far as the trie goes."""
        trie = self.trie
        f, d = pos
        i, n = 0, len(seq)
        child: Node | None
        while i < n:
            if d < f.end:  # inside f's edge
                m = trie.common_length(f.key[d - f.start:], seq, i)
                d, i = d + m, i + m
                if d < f.end:
                    break
            else:
                child = f.children.get(trie.child_key(seq, i))
                if child is None:
                    break
                f = child
        return f, d

    def _up(self, pos: Position, depth: int) -> Position:
        """The trie position at ``depth`` on the path to ``pos`` (clamped to ``pos``)."""
        f, d = pos
        d = min(d, depth)
        root = self.trie.root
        while f is not root and f.start >= d:
            assert f.parent is not None
            f = f.parent
        return f, d

    def _next_use(self, node: Node) -> float:
        f, d = node.aux
        if d < node.end:
            return math.inf  # the path leaves the trie: never used again
        users = f.aux
        i = bisect_right(users, self.cache.now)
        return users[i] if i < len(users) else math.inf

    def _push(self, node: Node) -> None:
        self.heap.push(node, (-self._next_use(node), -node.end))

    # ---------------------------------------------------------------- hooks
    def on_created(self, leaf: Node) -> None:
        parent = leaf.parent
        assert parent is not None
        if parent is self.cache.root:
            leaf.aux = self._locate((self.trie.root, 0), leaf.key)
        elif parent.aux is not None:
            f, d = parent.aux
            leaf.aux = (f, d) if d < parent.end else self._locate((f, d), leaf.key)
        else:
            leaf.aux = self._locate((self.trie.root, 0), self.cache.path_of(leaf))
        self._push(leaf)

    def on_access(self, node: Node, hit: bool) -> None:
        if not node.children and node.lock_ref == 0:
            self._push(node)

    def on_split(self, prefix: Node, suffix: Node, in_match: bool) -> None:
        pass  # the suffix keeps its end and so its position; the prefix is internal

    def on_candidacy(self, node: Node) -> None:
        if self.is_candidate(node):
            self._push(node)

    def on_removed(self, node: Node) -> None:
        parent = node.parent
        if parent is not None and parent is not self.cache.root and node.aux is not None:
            parent.aux = self._up(node.aux, parent.end)

    # ---------------------------------------------------------------- eviction
    def evict(self, n: int) -> int:
        cache = self.cache
        if not 0 <= cache.now < self.horizon:
            raise ConfigError(f"'optimal' needs now = the request index (0..{self.horizon - 1}),"
                              f" got now={cache.now}")
        page = cache.page_size
        need = -(-n // page) * page
        freed = 0
        while freed < need:
            entry = self.heap.pop()
            if entry is None:
                break
            node = entry[1]
            end = node.end
            f, d = node.aux
            floor = max(d if d < end else f.start, node.start)
            amount = min(need - freed, end - floor)
            cache.trim_leaf(node, amount)
            freed += amount
            if node.parent is not None:
                node.aux = self._up(node.aux, node.end)
                self._push(node)
        return freed

    def check(self) -> None:
        live = self.heap.live()
        for node in self.cache.nodes():
            if node.children:
                continue
            expect = self._locate((self.trie.root, 0), self.cache.path_of(node))
            if node.aux != expect:
                raise IntegrityError(f"optimal: {node} position {node.aux} != {expect}")
            if self.is_candidate(node) and id(node) not in live:
                raise IntegrityError(f"optimal: candidate {node} missing from the heap")
