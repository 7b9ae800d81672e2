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
  credited with the length the new leaf shares with the span, segment by segment (a
  ghost keeps each segment's ids as the key its trim cut and the place of the cut,
  sliced and joined only when read; successive trims of one leaf append to one
  ghost's lists). Entries
  keep their anchor alive (the id cannot be reused while the entry exists). The list
  holds at most ``capacity`` tokens of ghosts, oldest dropped first (as ARC's ghost
  lists: "would a cache twice as large have kept it?"). A dropped ghost stays as an
  *echo* for ``memory`` more tokens, so that popularity outlives the span (``recall``):
  it is no longer credited, only checked, at the ids ending its prefixes of 2, 4, 8,
  ... pages and its whole length. An echo is the dropped ghost object itself: nothing
  is built when it is made, and those ids are read only when it is recalled, which most
  echoes never are. Its cuts keep the evicted keys' arrays alive, so the ghosts and
  echoes together keep about ``capacity + memory`` evicted ids in memory (plus what
  those arrays share with the leaves they were cut from).

Nothing here reads a clock or a random generator.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, NamedTuple

import numpy as np

__all__ = ["Cut", "Ghost", "GhostList", "ReuseModel", "Segment"]


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
        self._stale = [-1.0] * size  # a group's estimates, all stale
        self.halvings = 0  # how many times every estimate changed at once

    def p(self, cls: int) -> float:
        value = self._p[cls]
        if value < 0:
            g = cls // self.size
            q = (self._group_reused[g] + 1.0) / (self._group_evicted[g] + 2.0)
            w = self.weight
            value = self._p[cls] = (self.reused[cls] + w * q) / (self.evicted[cls] + w)
        return value

    def resolve(self, cls: int, tokens: int, reused: int) -> int:
        """A ghost's segment of ``tokens`` evicted ids is settled: ``reused`` of them
        were asked for again (0 if it was forgotten first). Returns the group whose
        estimates changed (all of them changed if ``halvings`` moved)."""
        g = cls // self.size
        self.evicted[cls] += tokens
        self.reused[cls] += reused
        self._group_evicted[g] += tokens
        self._group_reused[g] += reused
        first = g * self.size
        self._p[first:first + self.size] = self._stale
        self._since += tokens
        if self._since >= self.horizon:
            self._since = 0
            for counts in (self.evicted, self.reused, self._group_evicted,
                           self._group_reused):
                counts[:] = [x * 0.5 for x in counts]
            self._p = [-1.0] * len(self._p)
            self.halvings += 1
        return g

    def forgotten(self, ghosts: list[Ghost]) -> set[int]:
        """``resolve(cls, tokens, 0)`` for each segment of ``ghosts`` (forgotten, never
        asked for again), shallow first; the groups whose estimates changed."""
        return {self.resolve(cls, tokens, 0)
                for ghost in ghosts for cls, tokens, _, _ in reversed(ghost.segments)}


class Segment(NamedTuple):
    cls: int  # the class of the tokens when they were evicted
    tokens: int
    epoch: int  # the phase they were evicted in
    predicted: bool  # chosen by prediction (True) or by the random fallback


Cut = tuple[np.ndarray, int]  # (key, start): a trim evicted key[start:] of a leaf's key


class Ghost:
    """An evicted span: its ids, and its segments as evicted; a leaf trimmed several
    times leaves one ghost whose segments are its successive trims (``cuts``: for each
    trim, the leaf's key as it was and where the trim cut it, sliced only when read:
    most ghosts never are). Both lists are in the order of the trims, so the *deepest*
    comes first: a further trim of the leaf merges into the same ghost in O(1)
    (``merge``; the ghost is then re-keyed)."""

    __slots__ = ("anchor", "cuts", "hits", "segments", "tokens")

    def __init__(self, anchor: Any, cuts: list[Cut], tokens: int, segments: list[Segment],
                 hits: int) -> None:
        self.anchor = anchor  # the node the span hung from (kept alive by this entry)
        self.cuts = cuts  # the evicted ids, one cut per segment, deepest first
        self.tokens = tokens  # the span's length
        self.segments = segments  # deepest first, as cuts
        self.hits = hits  # the evicted node's hits (its popularity survives the eviction)

    def merge(self, anchor: Any, cut: Cut, segment: Segment, hits: int) -> None:
        """A further trim of the same leaf evicted ``cut`` (shallower than the rest),
        now hanging from ``anchor``."""
        self.anchor = anchor
        self.cuts.append(cut)
        self.segments.append(segment)
        self.tokens += segment.tokens
        self.hits = hits

    @property
    def span(self) -> np.ndarray:
        """The evicted ids, shallow first."""
        cuts = self.cuts
        if len(cuts) == 1:
            key, start = cuts[0]
            return key[start:]
        return np.concatenate([key[start:] for key, start in reversed(cuts)])

    def ids_at(self, ends: list[int]) -> list[int]:
        """The ids that end the span's prefixes of ``ends`` (ascending) tokens, read
        from the cut keys without slicing or joining them."""
        out = []
        cuts = reversed(self.cuts)
        key, first = next(cuts)
        start, stop = 0, len(key) - first  # the span's positions this cut holds
        for end in ends:
            while end > stop:
                key, first = next(cuts)
                start, stop = stop, stop + len(key) - first
            out.append(key.item(first + end - 1 - start))
        return out


class GhostList:
    def __init__(self, capacity: int, memory: int = 0, page: int = 1) -> None:
        self.page = page
        self._doublings = [page << i for i in range(1, 64)]  # 2, 4, 8, ... pages
        self.capacity = capacity
        self.tokens = 0
        self._entries: OrderedDict[tuple[int, object], Ghost] = OrderedDict()
        self.memory = memory
        self.echo_tokens = 0
        self._echoes: OrderedDict[tuple[int, object], Ghost] = OrderedDict()

    def _echo(self, key: tuple[int, object], ghost: Ghost) -> None:
        """Keep the forgotten ``ghost`` as an echo: as it is (its arrays are views, so
        nothing is copied; the ids an echo is checked at are read only if it is
        recalled, and most never are)."""
        if self.memory <= 0:
            return
        self._echoes[key] = ghost
        self.echo_tokens += ghost.tokens
        while self.echo_tokens > self.memory and self._echoes:
            self.echo_tokens -= self._echoes.popitem(last=False)[1].tokens

    def recall(self, key: tuple[int, object], anchor: Any,
               ids: np.ndarray) -> tuple[int, int] | None:
        """A forgotten ghost under ``key`` hanging from ``anchor``, asked for again by a
        new leaf with ``ids`` (it starts with the ghost's first page): its hits and the
        length the leaf is taken to share with it: the longest of the echo's prefix
        lengths (2, 4, 8, ... pages while shorter than the span, then its whole length)
        up to which ``ids`` agrees with the id ending each of them (0 if none). None if
        there is no such echo; the echo is dropped."""
        echo = self._echoes.get(key)
        if echo is None or echo.anchor is not anchor:
            return None
        del self._echoes[key]
        length = echo.tokens
        self.echo_tokens -= length
        ends = self._doublings[:max(0, ((length - 1) // self.page).bit_length() - 1)]
        ends.append(length)
        shared = 0
        for end, last in zip(ends, echo.ids_at(ends), strict=True):
            if end > len(ids) or ids.item(end - 1) != last:
                break
            shared = end
        return echo.hits, shared

    def __len__(self) -> int:
        return len(self._entries)

    def add_trim(self, tail: tuple[int, object] | None, node: Any, key: tuple[int, object],
                 anchor: Any, cut: Cut, segment: Segment, hits: int) -> list[Ghost]:
        """A trim of ``node`` evicted ``cut`` (its ``segment``): remember it under
        ``key`` hanging from ``anchor``, merged with the ghost of the node's earlier
        trims (under ``tail``, if it is still there). Returns the ghosts forgotten to
        make room, or replaced (another ghost under ``key``), oldest first."""
        ghost = self.take(tail, node) if tail is not None else None
        if ghost is None:
            ghost = Ghost(anchor, [cut], segment.tokens, [segment], hits)
        else:
            ghost.merge(anchor, cut, segment, hits)
        gone = []
        entries = self._entries
        old = entries.pop(key, None)
        if old is not None:
            self.tokens -= old.tokens
            gone.append(old)
        entries[key] = ghost
        self.tokens += ghost.tokens
        if self._echoes:
            old_echo = self._echoes.pop(key, None)
            if old_echo is not None:
                self.echo_tokens -= old_echo.tokens
        while self.tokens > self.capacity and entries:
            dropped_key, dropped = entries.popitem(last=False)
            self.tokens -= dropped.tokens
            gone.append(dropped)
            self._echo(dropped_key, dropped)
        return gone

    def take(self, key: tuple[int, object], anchor: Any) -> Ghost | None:
        """The ghost under ``key`` if it hangs from ``anchor`` (it is then forgotten)."""
        ghost = self._entries.get(key)
        if ghost is None or ghost.anchor is not anchor:
            return None
        del self._entries[key]
        self.tokens -= ghost.tokens
        return ghost
