"""``lfu``: SGLang's LFU eviction (anchors.md "Eviction beyond LRU").

Algorithm: the candidates are the unlocked leaves; evict whole leaves with the fewest
hits first (a hit: a match that passed through the node; a new leaf has 0, a prefix
split off keeps its node's count), ties to the oldest last access, until at least n
tokens are freed. Like SGLang, ``insert`` asks it to free the whole allocation.

Parameters: none (``seed`` is accepted and unused). Cost: O(log L) per change.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kvroute.cache.eviction.registry import register
from kvroute.cache.eviction.scored_leaves import ScoredLeaves

if TYPE_CHECKING:
    from kvroute.cache.radix import Node

__all__ = ["LFU"]


@register
class LFU(ScoredLeaves):
    name = "lfu"
    default_request = "allocation"

    def key(self, node: Node) -> tuple[int, float]:
        return (node.aux or 0, node.last_access)
