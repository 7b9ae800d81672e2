"""``sae``: the session-aware eviction of vLLM's CPU offload tier (anchors.md "Eviction
beyond LRU"), on the radix tree.

Algorithm: each unlocked leaf has a score ``last_access + hit_weight * hits +
depth_weight / (1 + depth / 8)`` (depth: the leaf's start, in pages; time: the cache's
clock, the request index in a replay); evict whole leaves, lowest score first, until at
least n tokens are freed.

* Ghost popularity: when a leaf is evicted its hit count is remembered under the place
  it hung (``(parent, first page)``, at most ``capacity / page_size`` entries, oldest
  forgotten first); a new leaf created there again starts with that count.
* Admission gate: a new leaf with no ghost popularity (a span never seen before, such as
  a new session's turn) is admitted on probation: its score has no depth bonus until
  its first hit, so unproven spans go before proven ones of the same age.

Parameters: ``hit_weight`` (1500) and ``depth_weight`` (30000), vLLM's constants, in
units of the clock. ``seed`` is accepted and unused. The reading of "depth" (pages), of
"time" (the cache's clock) and of the gate (no depth bonus on probation) is ours:
anchors.md gives the formula and the three mechanisms, not the units.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING

from kvroute.cache.eviction.registry import register
from kvroute.cache.eviction.scored_leaves import ScoredLeaves
from kvroute.params import number

if TYPE_CHECKING:
    from kvroute.cache.radix import Node, RadixCache

__all__ = ["SessionAware"]


@register
class SessionAware(ScoredLeaves):
    name = "sae"

    def __init__(self, seed: int | None = None, hit_weight: float = 1500.0,
                 depth_weight: float = 30000.0) -> None:
        self.hit_weight = number("sae", "hit_weight", hit_weight, low=0.0)
        self.depth_weight = number("sae", "depth_weight", depth_weight, low=0.0)
        self._ghosts: OrderedDict[tuple[int, object], tuple[Node, int]] = OrderedDict()
        self._probation: set[int] = set()

    def attach(self, cache: RadixCache) -> None:
        super().attach(cache)
        self._page = cache.page_size
        self._ghost_cap = max(1, cache.capacity // cache.page_size)

    def key(self, node: Node) -> float:
        hits = node.aux or 0
        score = node.last_access + self.hit_weight * hits
        if hits or id(node) not in self._probation:
            score += self.depth_weight / (1 + node.start / self._page / 8)
        return score

    def on_created(self, leaf: Node) -> None:
        parent = leaf.parent
        assert parent is not None
        ghost = self._ghosts.pop((id(parent), self.cache.child_key(leaf.key, 0)), None)
        if ghost is not None and ghost[0] is parent:
            leaf.aux = ghost[1]
        else:
            leaf.aux = 0
            self._probation.add(id(leaf))
        if leaf.lock_ref == 0:
            self._push(leaf)

    def on_access(self, node: Node, hit: bool) -> None:
        if hit and node.aux == 0:
            self._probation.discard(id(node))
        super().on_access(node, hit)

    def on_removed(self, node: Node) -> None:
        self._probation.discard(id(node))

    def on_evicted(self, node: Node) -> None:
        parent = node.parent
        assert parent is not None
        self._ghosts[(id(parent), self.cache.child_key(node.key, 0))] = (parent, node.aux or 0)
        while len(self._ghosts) > self._ghost_cap:
            self._ghosts.popitem(last=False)
