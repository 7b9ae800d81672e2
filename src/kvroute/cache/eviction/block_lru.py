"""Block LRU, vLLM's GPU prefix cache (anchors.md, "Eviction beyond LRU": LRU only).

vLLM keeps the cached blocks no request holds in a free queue, least recently freed
first; a finished request frees its blocks tail first, so of one sequence the last
blocks go first, and a block hit again leaves the queue. Evicting takes blocks from the
front one at a time, exactly as many as the allocation needs.

In the radix tree: the candidates are the unlocked leaves; to free n tokens, take pages
from the end of the leaf of oldest last access (ties: the leaf that became a candidate
first) until n tokens (rounded up to a page) are free; a leaf that empties goes, and its
parent may become a candidate with its own last access (at least its child's: every walk
through the child passed it). Against ``lru`` (SGLang's), which removes whole leaves
and asks for the whole allocation, it frees exactly what is needed, a page at a time.
Recency is the tree's ``last_access`` (set by every match and insert walk), where vLLM
orders by the time a block was freed: the same order for a block no running request
holds.

Parameters: none (``seed`` is accepted and unused, as every online policy takes one).
The mechanism is :class:`~kvroute.cache.eviction.scored_leaves.ScoredLeaves` (its heap
keyed by last access, and its page-wise eviction: ``frees_whole_leaves = False``).
O(log L) per heap change and per victim leaf.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kvroute.cache.eviction.registry import register
from kvroute.cache.eviction.scored_leaves import ScoredLeaves

if TYPE_CHECKING:
    from kvroute.cache.radix import Node

__all__ = ["BlockLRU"]


@register
class BlockLRU(ScoredLeaves):
    name = "block_lru"
    frees_whole_leaves = False

    def key(self, node: Node) -> float:
        return node.last_access
