"""``ScoredLeaves``: the mechanism shared by the whole-leaf policies (``lru``, ``lfu``,
``slru``, ``sae``, and ``block_lru``): a lazy min-heap of the unlocked leaves keyed by
the policy's ``key(node)``; ``evict(n)`` takes from the leaf of smallest key first until
at least n tokens are freed: the whole leaf, or, for a policy that declares
``frees_whole_leaves = False`` (``block_lru``), only the pages still needed (n rounded up
to a page in all), from the leaf's end, the rest staying a candidate under its key.
``node.aux`` holds the node's hit count (matches that passed through it), copied to the
new prefix on a split. Subclasses define ``key`` (a tuple or number that only changes
when the node is accessed or hit) and may override ``on_created`` and ``on_evicted``
(called before a whole leaf leaves the tree).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kvroute.cache.eviction.leaf_heap import LeafHeap
from kvroute.cache.eviction.policy import EvictionPolicy
from kvroute.errors import IntegrityError

if TYPE_CHECKING:
    from kvroute.cache.radix import Node, RadixCache

__all__ = ["ScoredLeaves"]


class ScoredLeaves(EvictionPolicy):
    takes_seed = True
    frees_whole_leaves = True

    def __init__(self, seed: int | None = None) -> None:
        """``seed`` is unused (the policy is deterministic); every online policy takes one."""

    def attach(self, cache: RadixCache) -> None:
        super().attach(cache)
        self.heap = LeafHeap(self.is_candidate)

    def key(self, node: Node) -> Any:
        raise NotImplementedError

    def _push(self, node: Node) -> None:
        self.heap.push(node, self.key(node))

    def on_created(self, leaf: Node) -> None:
        leaf.aux = 0
        if leaf.lock_ref == 0:
            self._push(leaf)

    def on_access(self, node: Node, hit: bool) -> None:
        if hit:
            node.aux = (node.aux or 0) + 1
        if not node.children and node.lock_ref == 0:
            self._push(node)

    def on_split(self, prefix: Node, suffix: Node, in_match: bool) -> None:
        prefix.aux = suffix.aux
        if self.is_candidate(suffix):  # its start moved (a key may depend on it)
            self._push(suffix)

    def on_candidacy(self, node: Node) -> None:
        if self.is_candidate(node):
            self._push(node)

    def on_evicted(self, node: Node) -> None:
        """Called before a whole victim leaf leaves the tree."""

    def evict(self, n: int) -> int:
        whole = self.frees_whole_leaves
        if not whole:
            page = self.cache.page_size
            n = -(-n // page) * page
        freed = 0
        while freed < n:
            entry = self.heap.pop()
            if entry is None:
                break
            node = entry[1]
            size = len(node.key)
            take = size if whole or size <= n - freed else n - freed
            freed += take
            if take == size:
                self.on_evicted(node)
            self.cache.trim_leaf(node, take)
            if take < size:  # pages left: still the candidate of least key
                self._push(node)
        return freed

    def check(self) -> None:
        live = self.heap.live()
        for node in self.cache.nodes():
            if self.is_candidate(node) and id(node) not in live:
                raise IntegrityError(f"{self.name}: candidate leaf {node} missing from the heap")
        for entry_key, node in live.values():
            if entry_key != self.key(node):
                raise IntegrityError(f"{self.name}: heap key {entry_key} of {node} is stale")
