"""The eviction-policy protocol: the hooks the radix tree calls, and what they promise.

A policy object serves exactly one :class:`~kvroute.cache.radix.RadixCache`. The tree
owns the structure, the sizes and the locks; a policy owns its candidate set and decides
victims. The tree calls, in this order of life:

* ``attach(cache)`` once, from the cache's constructor;
* ``on_created(leaf)`` for a new (unlocked) leaf made by ``insert``;
* ``on_access(node, hit)`` for every node a ``match`` (``hit=True``) or an ``insert``
  (``hit=False``) walks through, after ``node.last_access`` is set to the cache's now;
* ``on_split(prefix, suffix, in_match)`` after an edge is cut (``suffix`` is the old
  node object; its leaf status and lock count are unchanged);
* ``on_candidacy(node)`` when the node's leaf status or lock status changed (it gained
  its first child, lost its last one, or its lock count moved between 0 and 1);
* ``on_removed(node)`` when the node leaves the tree (its ``parent`` is still set);
* ``evict(n)`` to free up to n tokens, through the tree's ``_trim_leaf`` (eager) or
  ``_discard`` + ``_unlink_leaf`` (a policy that trims lazily; ``_unlink_quietly``
  unlinks without calling ``on_removed``/``on_candidacy``, for a policy that updates
  its own candidate set for those nodes and their parents); returns tokens freed;
* ``settle(node)`` (only if ``lazy_trim``) before the tree reads a leaf's key;
* ``check()`` from ``check_integrity``: raise IntegrityError if the policy's state
  disagrees with the tree.

A policy never reads the wall clock or a global RNG: randomness comes from its own
seeded generator, time from ``node.last_access`` / ``cache.now``.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar, Literal

from kvroute.errors import ConfigError

if TYPE_CHECKING:
    from kvroute.cache.radix import Node, RadixCache

__all__ = ["EvictionPolicy", "LeafHeap"]


class EvictionPolicy:
    """Base class with no-op hooks; subclasses override what they need."""

    name: ClassVar[str] = ""
    needs_future: ClassVar[bool] = False
    takes_seed: ClassVar[bool] = True
    describe_needs: ClassVar[str] = ""  # why it cannot run somewhere, for error messages
    #: what ``insert`` asks to free when over capacity: the deficit or the whole allocation
    default_request: ClassVar[Literal["deficit", "allocation"]] = "deficit"
    #: True if the policy trims candidate leaves lazily and provides ``settle``
    lazy_trim: ClassVar[bool] = False

    cache: RadixCache

    def attach(self, cache: RadixCache) -> None:
        if getattr(self, "cache", None) is not None:
            raise ConfigError(f"eviction policy {self.name!r} already serves another cache;"
                              " make one policy object per cache")
        self.cache = cache

    def on_created(self, leaf: Node) -> None:
        self.on_candidacy(leaf)

    def on_access(self, node: Node, hit: bool) -> None:
        pass

    def on_split(self, prefix: Node, suffix: Node, in_match: bool) -> None:
        prefix.mark = suffix.mark

    def on_candidacy(self, node: Node) -> None:
        pass

    def on_removed(self, node: Node) -> None:
        pass

    def settle(self, node: Node) -> None:
        pass

    def evict(self, n: int) -> int:
        raise NotImplementedError

    def check(self) -> None:
        pass

    @staticmethod
    def is_candidate(node: Node) -> bool:
        """An unlocked leaf that is still in the tree."""
        return node.parent is not None and not node.children and node.lock_ref == 0


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

    def live(self) -> dict[int, Node]:
        """The nodes with a live entry, by id (for integrity checks)."""
        return {id(e[2]): e[2] for e in self._heap if e[2].slot == e[1] and self._valid(e[2])}

    def pop(self) -> tuple[object, Node] | None:
        heap = self._heap
        while heap:
            key, seq, node = heapq.heappop(heap)
            if node.slot == seq and self._valid(node):
                node.slot = -1
                return key, node
        return None
