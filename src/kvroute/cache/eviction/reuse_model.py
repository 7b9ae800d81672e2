"""What ``learned`` eviction learns from: reuse rates per class, and ghost entries.

* :class:`ReuseModel`: for each class of leaf, the tokens evicted from that class and
  the tokens of them that were asked for again while their ghost was remembered, both
  counted when the ghost is settled (asked for, or forgotten), so that the two counts
  always cover the same evictions. The
  estimated reuse probability of a class is ``(reused + w * q) / (evicted + w)``, where
  q is its group's rate ``(reused + 1) / (evicted + 2)`` summed over the group (a hit
  bucket and all its ages; an unseen group counts as 1/2) and w is ``weight`` tokens
  (the policy passes one page... of evidence per class: an unseen age of a hit bucket
  borrows the bucket's rate instead of a flat 1/2). Both counts are halved each time a further
  ``horizon`` tokens have been settled, so the estimates follow a changing stream
  (memory of about two horizons; the policy passes its cache's capacity).
* :class:`GhostList`: recently evicted spans, keyed by ``(id(anchor), first page)``:
  the anchor is the node the span hung from when it left (the trimmed leaf itself, or
  the parent of a leaf that went whole), so a later request that asks for the span
  again creates a new leaf under the same anchor with the same first page; it is
  credited with the length the new leaf shares with the span, segment by segment. Entries
  keep their anchor alive (the id cannot be reused while the entry exists). The list
  holds at most ``capacity`` tokens of ghosts, oldest dropped first (as ARC's ghost
  lists: "would a cache twice as large have kept it?").

Nothing here reads a clock or a random generator.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, NamedTuple

import numpy as np

__all__ = ["Ghost", "GhostList", "ReuseModel", "Segment"]


class ReuseModel:
    """Classes come in ``groups`` of ``size`` (a hit bucket and its ages)."""

    def __init__(self, groups: int, size: int, horizon: int, weight: int = 1) -> None:
        self.size = size
        self.evicted = [0.0] * (groups * size)
        self.reused = [0.0] * (groups * size)
        self._group_evicted = [0.0] * groups
        self._group_reused = [0.0] * groups
        self.horizon = max(1, horizon)
        self.weight = weight
        self._since = 0
        self._p: list[float] = [-1.0] * (groups * size)  # cached estimates (-1: stale)

    def p(self, cls: int) -> float:
        value = self._p[cls]
        if value < 0:
            g = cls // self.size
            q = (self._group_reused[g] + 1.0) / (self._group_evicted[g] + 2.0)
            w = self.weight
            value = self._p[cls] = (self.reused[cls] + w * q) / (self.evicted[cls] + w)
        return value

    def resolve(self, cls: int, tokens: int, reused: int) -> None:
        """A ghost's segment of ``tokens`` evicted ids is settled: ``reused`` of them
        were asked for again (0 if it was forgotten first)."""
        g = cls // self.size
        self.evicted[cls] += tokens
        self.reused[cls] += reused
        self._group_evicted[g] += tokens
        self._group_reused[g] += reused
        first = g * self.size
        self._p[first:first + self.size] = [-1.0] * self.size
        self._since += tokens
        if self._since >= self.horizon:
            self._since = 0
            for counts in (self.evicted, self.reused, self._group_evicted,
                           self._group_reused):
                counts[:] = [x * 0.5 for x in counts]
            self._p = [-1.0] * len(self._p)


class Segment(NamedTuple):
    cls: int  # the class of the tokens when they were evicted
    tokens: int
    epoch: int  # the phase they were evicted in
    predicted: bool  # chosen by prediction (True) or by the random fallback


class Ghost(NamedTuple):
    """An evicted span: its ids, and its segments (shallow first) as evicted; a leaf
    trimmed several times leaves one ghost whose segments are its successive trims."""

    anchor: Any  # the node the span hung from (kept alive by this entry)
    span: np.ndarray  # the evicted ids, shallow first
    segments: tuple[Segment, ...]
    hits: int  # the evicted node's hits (its popularity survives the eviction)

    @property
    def tokens(self) -> int:
        return len(self.span)


class GhostList:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.tokens = 0
        self._entries: OrderedDict[tuple[int, object], Ghost] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, key: tuple[int, object], ghost: Ghost) -> list[Ghost]:
        """Remember ``ghost``; returns the ghosts forgotten to make room (or replaced)."""
        gone = []
        old = self._entries.pop(key, None)
        if old is not None:
            self.tokens -= old.tokens
            gone.append(old)
        self._entries[key] = ghost
        self.tokens += ghost.tokens
        while self.tokens > self.capacity and self._entries:
            dropped = self._entries.popitem(last=False)[1]
            self.tokens -= dropped.tokens
            gone.append(dropped)
        return gone

    def take(self, key: tuple[int, object], anchor: Any) -> Ghost | None:
        """The ghost under ``key`` if it hangs from ``anchor`` (it is then forgotten)."""
        ghost = self._entries.get(key)
        if ghost is None or ghost.anchor is not anchor:
            return None
        del self._entries[key]
        self.tokens -= ghost.tokens
        return ghost
