"""``slru``: SGLang's segmented LRU (anchors.md "Eviction beyond LRU").

Algorithm: a leaf is *probationary* until its second access (its first hit: a match
that passed through it after the insert that stored it), then *protected*. Evict whole
leaves: every probationary leaf before any protected one, each segment oldest last
access first, until at least n tokens are freed. A prefix split off a node keeps the
node's hits. Like SGLang, ``insert`` asks it to free the whole allocation.

Parameters: none (``seed`` is accepted and unused). Cost: O(log L) per change.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kvroute.cache.eviction.registry import register
from kvroute.cache.eviction.scored_leaves import ScoredLeaves

if TYPE_CHECKING:
    from kvroute.cache.radix import Node

__all__ = ["SLRU"]


@register
class SLRU(ScoredLeaves):
    name = "slru"
    default_request = "allocation"

    def key(self, node: Node) -> tuple[int, float]:
        return (1 if (node.aux or 0) >= 1 else 0, node.last_access)
