"""``GroupHeaps``: ``learned`` eviction's candidate leaves, one lazy min-heap per class
group (``leaf_classes.group``) keyed by last access, with each group's top key cached.

Contract:

* ``push(node)`` files a candidate leaf under its current group and last access
  (superseding its earlier entry: ``node.slot`` holds the sequence number of its live
  entry, ``node.aux[4]`` and ``aux[5]`` its group and key); ``stale(node)`` says it is no
  longer a candidate. Entries of nodes pushed again, removed, locked or grown children
  are dropped lazily; the heaps are compacted when the entries double since the last
  compaction, so memory stays proportional to the tree.
* ``pop_least(estimates, p, epoch)`` removes and returns the leaf of least
  ``(estimate, last access, group)`` among the groups' tops, None if there is no live
  candidate; the estimate of a candidate of group b is that of its class
  ``b * AGES + age_bucket(epoch - node.mark)``: ``estimates[cls]``, or ``p(cls)`` where
  that is stale (negative). A group's key is recomputed only when it may have changed: a push
  that could be its new top, its top popped or no longer a candidate, ``changed(groups)``
  (the caller's estimates for them moved) or ``forget_all()`` (all of them moved, or the
  heaps were compacted); the stale groups are listed as they go stale, and a group with
  no live entry has no key (a push lists it again). So a victim costs a min over the keys
  of the non-empty groups plus one refresh per listed group. ``pop_least(..., oldest=True)``
  removes the leaf of least ``(last access, group)`` instead (LRU's victim);
  ``peek_least`` returns the leaf ``pop_least`` would, leaving it in place.
* ``unmarked(epoch)``: the live candidates not marked in ``epoch``, in the order of their
  entries (independent of the heaps' layout, so a seeded draw over them is too); the
  caller calls ``new_phase()`` whenever its epoch moves on (marks only grow within one):
  the first read in a phase gathers the live entries from the heaps and sorts them by
  entry (O(E log E); the fallback that reads them is rare, and no push or pop pays for
  an order kept by the way), a later read in the phase costs O(the entries still
  unmarked); ``any_live()``: whether any candidate is left.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from heapq import heapify, heappop, heappush
from operator import itemgetter
from typing import TYPE_CHECKING

from kvroute.cache.eviction.leaf_classes import AGES, age_bucket, group

if TYPE_CHECKING:
    from kvroute.cache.radix import Node

__all__ = ["GroupHeaps"]

_by_access = itemgetter(1, 2, 3)  # a group's cached key without its estimate
_by_seq = itemgetter(1)  # an entry's order

Entry = tuple[float, int, "Node"]
Key = tuple[float, float, int, int]  # (estimate, last access, group, seq)


def valid(node: Node) -> bool:
    """A candidate: a leaf below the root that no request holds."""
    return node.parent is not None and not node.children and node.lock_ref == 0


class GroupHeaps:
    def __init__(self, groups: int) -> None:
        self.heaps: list[list[Entry]] = [[] for _ in range(groups)]
        self._seq = 0
        self._entries = 0
        self._compact_at = 64
        # per group with a live entry, the key of its heap's top, or None (stale); an empty
        # group is absent. The stale groups are listed in dirty (once: a key is listed
        # when it goes to None)
        self.best: dict[int, Key | None] = dict.fromkeys(range(groups))
        self.dirty = list(range(groups))
        # the live entries (node.slot == seq) not yet seen marked in the phase ``unmarked``
        # last read (-1: none since the last ``new_phase``), by seq in order of entry
        # (seqs only grow), which it prunes as it reads: within a phase marks are only
        # added
        self._unmarked: dict[int, Node] = {}
        self._unmarked_epoch = -1

    def push(self, node: Node) -> None:
        aux = node.aux
        g = group(node)
        last = node.last_access
        if node.slot > 0:
            if aux[4] == g and aux[5] == last:
                return  # its live entry is already this one
            self.stale(node)  # its old entry goes stale
        aux[4] = g
        aux[5] = last
        self._seq = seq = self._seq + 1
        node.slot = seq
        if self._unmarked_epoch >= 0 and node.mark != self._unmarked_epoch:
            self._unmarked[seq] = node
        heappush(self.heaps[g], (last, seq, node))
        best = self.best
        cached = best.get(g, ())  # () if the group was empty
        if cached is not None and (not cached or last < cached[1]):
            best[g] = None  # the new entry is the group's top
            self.dirty.append(g)
        self._entries += 1
        if self._entries > self._compact_at:
            self._compact()

    def stale(self, node: Node) -> None:
        """``node`` stopped being a candidate: if it heads its group, the group's next
        top (maybe of another age, so of another estimate) must be looked at."""
        aux = node.aux
        if node.slot > 0 and isinstance(aux, list) and aux[4] >= 0:
            cached = self.best.get(aux[4])
            if cached is not None and cached[3] == node.slot:
                self.best[aux[4]] = None
                self.dirty.append(aux[4])

    def changed(self, groups: Iterable[int]) -> None:
        """The caller's estimates changed for ``groups``."""
        best, dirty = self.best, self.dirty
        for g in groups:
            if best.get(g) is not None:
                best[g] = None
                dirty.append(g)

    def forget_all(self) -> None:
        """Every group's key may have changed (an empty group has none)."""
        best = self.best
        for b, key in best.items():
            if key is not None:
                best[b] = None
                self.dirty.append(b)

    def new_phase(self) -> None:
        """The caller's phase moved on: every key may have changed, and marks were reset."""
        self.forget_all()
        self._unmarked = {}
        self._unmarked_epoch = -1

    def _compact(self) -> None:
        live = 0
        for i, heap in enumerate(self.heaps):
            for e in heap:
                if e[2].slot == e[1] and not valid(e[2]):
                    e[2].slot = -1
            kept = [e for e in heap if e[2].slot == e[1]]
            heapify(kept)
            self.heaps[i] = kept
            live += len(kept)
        self.forget_all()
        self._entries = live
        self._compact_at = max(64, 2 * live)

    def _top(self, heap: list[Entry]) -> Node | None:
        while heap:
            _, seq, node = heap[0]
            if node.slot == seq:
                if node.parent is not None and not node.children and node.lock_ref == 0:
                    return node  # valid(node), inlined: this runs for every victim
                node.slot = -1  # its live entry goes: a later push must not skip
            heappop(heap)
            self._entries -= 1
        return None

    def pop_least(self, estimates: list[float], p: Callable[[int], float],
                  epoch: int, oldest: bool = False) -> Node | None:
        """Pop the leaf of least (estimate, last access, group): a candidate of group b
        has the estimate of class ``b * AGES + age_bucket(epoch - node.mark)``, cached in
        ``estimates`` (negative: stale, computed by ``p``). With ``oldest``, the leaf of
        least (last access, group) instead: LRU's victim among the candidates."""
        b = self._least(estimates, p, epoch, oldest)
        if b < 0:
            return None
        _, _, node = heappop(self.heaps[b])
        self._entries -= 1
        node.slot = -1
        self.best[b] = None
        self.dirty.append(b)
        return node

    def peek_least(self, estimates: list[float], p: Callable[[int], float],
                   epoch: int, oldest: bool = False) -> Node | None:
        """The leaf ``pop_least`` would pop, left where it is."""
        b = self._least(estimates, p, epoch, oldest)
        return None if b < 0 else self.heaps[b][0][2]

    def _least(self, estimates: list[float], p: Callable[[int], float], epoch: int,
               oldest: bool) -> int:
        """The group whose heap's top is the least candidate (-1 if there is none),
        refreshing the listed groups' keys on the way."""
        best, dirty, heaps = self.best, self.dirty, self.heaps
        while True:
            for b in dirty:  # the groups that changed since the last look
                if best.get(b, ()) is None:
                    heap = heaps[b]
                    node = self._top(heap)
                    if node is None:
                        del best[b]  # empty: a push lists it again
                        continue
                    cls = b * AGES + age_bucket(epoch - node.mark)
                    estimate = estimates[cls]
                    if estimate < 0:
                        estimate = p(cls)
                    best[b] = (estimate, node.last_access, b, node.slot)  # slot: heap[0]'s seq
            dirty.clear()
            if not best:
                return -1  # every heap is empty
            if oldest:
                _, _, b, seq = min(best.values(), key=_by_access)  # type: ignore[arg-type,misc]
            else:
                _, _, b, seq = min(best.values())  # type: ignore[type-var,misc]  # no None left
            heap = heaps[b]
            if heap and heap[0][1] == seq:
                node = heap[0][2]
                if (node.slot == seq and node.parent is not None and not node.children
                        and node.lock_ref == 0):  # valid(node), inlined
                    return b
            best[b] = None  # its top went stale unseen: look again
            dirty.append(b)

    def unmarked(self, epoch: int) -> list[Node]:
        if epoch != self._unmarked_epoch:
            self._unmarked_epoch = epoch
            entries = [e for heap in self.heaps for e in heap if e[2].slot == e[1]]
            entries.sort(key=_by_seq)
            self._unmarked = {seq: node for _, seq, node in entries}
        pool = self._unmarked
        out, gone = [], []
        for seq, node in pool.items():
            if node.slot != seq or node.mark == epoch:
                gone.append(seq)  # stale for good (seqs are not reused) or marked for the phase
            elif node.parent is not None and not node.children and node.lock_ref == 0:
                out.append(node)  # live, unmarked and valid()
        for seq in gone:
            del pool[seq]
        return out

    def any_live(self) -> bool:
        return any(self._top(heap) is not None for heap in self.heaps)

    def live(self) -> Iterator[tuple[int, float, Node]]:
        """(group, key, node) of every live entry (for integrity checks)."""
        for b, heap in enumerate(self.heaps):
            for key, seq, node in heap:
                if node.slot == seq and valid(node):
                    yield b, key, node
