"""``LeafHeap``: a min-heap of candidate leaves with lazy invalidation, for policies
that rank their candidates by a key (``lru`` by last access, ``optimal`` by next use)."""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kvroute.cache.radix import Node

__all__ = ["LeafHeap"]


class LeafHeap:
    """A min-heap of candidate leaves with lazy invalidation.

    ``push(node, key)`` supersedes the node's earlier entries (``node.slot`` holds the
    sequence number of its live entry); ``pop()`` returns the node with the smallest key
    among live entries that still pass ``valid``. Entries for nodes that were pushed
    again, removed or locked are dropped on the way. Ties in key go to the earlier push.
    The heap is rebuilt when it doubles since the last rebuild, so memory stays
    proportional to the tree and pushes cost amortised O(log n).
    """

    def __init__(self, valid: Callable[[Node], bool]) -> None:
        self._heap: list[tuple[object, int, Node]] = []
        self._seq = 0
        self._valid = valid
        self._compact_at = 64

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, node: Node, key: object) -> None:
        self._seq += 1
        node.slot = self._seq
        heapq.heappush(self._heap, (key, self._seq, node))
        if len(self._heap) > self._compact_at:
            self._heap = [e for e in self._heap if e[2].slot == e[1] and self._valid(e[2])]
            heapq.heapify(self._heap)
            self._compact_at = max(64, 2 * len(self._heap))

    def live(self) -> dict[int, tuple[object, Node]]:
        """The live entries, ``id(node) -> (key, node)`` (for integrity checks)."""
        return {id(e[2]): (e[0], e[2]) for e in self._heap
                if e[2].slot == e[1] and self._valid(e[2])}

    def pop(self) -> tuple[object, Node] | None:
        heap = self._heap
        while heap:
            key, seq, node = heapq.heappop(heap)
            if node.slot == seq and self._valid(node):
                node.slot = -1
                return key, node
        return None
