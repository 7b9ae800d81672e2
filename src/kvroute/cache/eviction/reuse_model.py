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
  ghost's list of segments). Entries
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
from typing import Any

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
        # the cached estimates, -1 where stale (updated in place: callers may hold it)
        self.estimates: list[float] = [-1.0] * (groups * size)
        self._stale = [-1.0] * size  # a group's estimates, all stale
        self.halvings = 0  # how many times every estimate changed at once

    def p(self, cls: int) -> float:
        value = self.estimates[cls]
        if value < 0:
            g = cls // self.size
            q = (self._group_reused[g] + 1.0) / (self._group_evicted[g] + 2.0)
            w = self.weight
            value = self.estimates[cls] = (self.reused[cls] + w * q) / (self.evicted[cls] + w)
        return value

    def resolve(self, cls: int, tokens: int, reused: int) -> int:
        """A ghost's segment of ``tokens`` evicted ids is settled: ``reused`` of them
        were asked for again (0 if it was forgotten first). Returns the group whose
        estimates changed (all of them changed if ``halvings`` moved)."""
        size = self.size
        g = cls // size
        self.evicted[cls] += tokens
        self.reused[cls] += reused
        self._group_evicted[g] += tokens
        self._group_reused[g] += reused
        first = g * size
        self.estimates[first:first + size] = self._stale
        self._since += tokens
        if self._since >= self.horizon:
            self._halve()
        return g

    def _halve(self) -> None:
        self._since = 0
        for counts in (self.evicted, self.reused, self._group_evicted, self._group_reused):
            counts[:] = [x * 0.5 for x in counts]
        self.estimates[:] = [-1.0] * len(self.estimates)
        self.halvings += 1

    def forgotten(self, ghosts: list[Ghost]) -> set[int]:
        """``resolve(cls, tokens, 0)`` for each segment of ``ghosts`` (forgotten, never
        asked for again), shallow first; the groups whose estimates changed."""
        evicted, group_evicted = self.evicted, self._group_evicted
        size, horizon = self.size, self.horizon
        groups = set()
        for ghost in ghosts:
            for seg in reversed(ghost.segments):
                cls, tokens = seg[0], seg[1]
                g = cls // size
                evicted[cls] += tokens  # the counts resolve adds (reused += 0 changes none)
                group_evicted[g] += tokens
                groups.add(g)
                self._since += tokens
                if self._since >= horizon:
                    self._halve()  # halves in place: the lists above are still the counts
        stale, estimates = self._stale, self.estimates
        for g in groups:  # marked stale once per group (nothing reads them in between)
            estimates[g * size:g * size + size] = stale
        return groups


# A segment: one trim's evicted ids, as ``(cls, tokens, epoch, predicted, key, start)``:
# the class of the tokens when they were evicted, their count, the phase they were
# evicted in, whether prediction chose them (True) or the random fallback, and the cut:
# the trim evicted ``key[start:]`` of the leaf's key (sliced only when read). A plain
# tuple: one is built for every trim.
Segment = tuple[int, int, int, bool, np.ndarray, int]


class Ghost:
    """An evicted span: its segments as evicted; a leaf trimmed several times leaves one
    ghost whose segments are its successive trims, each with its cut of the leaf's key
    (sliced only when read: most ghosts never are). They are in the order of the trims,
    so the *deepest* comes first: a further trim of the leaf merges into the same ghost
    in O(1) (an append; the ghost is then re-keyed)."""

    __slots__ = ("anchor", "hits", "segments", "tokens")

    def __init__(self, anchor: Any, tokens: int, segments: list[Segment], hits: int) -> None:
        self.anchor = anchor  # the node the span hung from (kept alive by this entry)
        self.tokens = tokens  # the span's length
        self.segments = segments  # deepest first
        self.hits = hits  # the evicted node's hits (its popularity survives the eviction)

    @property
    def span(self) -> np.ndarray:
        """The evicted ids, shallow first."""
        segments = self.segments
        if len(segments) == 1:
            seg = segments[0]
            return seg[4][seg[5]:]
        return np.concatenate([seg[4][seg[5]:] for seg in reversed(segments)])

    def ids_at(self, ends: list[int]) -> list[int]:
        """The ids that end the span's prefixes of ``ends`` (ascending) tokens, read
        from the cut keys without slicing or joining them."""
        out = []
        segments = reversed(self.segments)
        seg = next(segments)
        key, first = seg[4], seg[5]
        start, stop = 0, len(key) - first  # the span's positions this cut holds
        for end in ends:
            while end > stop:
                seg = next(segments)
                key, first = seg[4], seg[5]
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
                 anchor: Any, segment: Segment, hits: int) -> list[Ghost]:
        """A trim of ``node`` evicted ``segment``: remember it under ``key`` hanging from
        ``anchor``, merged with the ghost of the node's earlier trims (under ``tail``, if
        it is still there). Returns the ghosts forgotten to make room, or replaced
        (another ghost under ``key``), oldest first. A forgotten ghost becomes an echo
        (as it is: nothing is copied; the ids an echo is checked at are read only if it
        is recalled, and most never are)."""
        entries = self._entries
        tokens = segment[1]
        ghost = entries.get(tail) if tail is not None else None
        if tail is not None and ghost is not None and ghost.anchor is node:
            del entries[tail]  # merged (taken as take does): re-keyed below
            ghost.anchor = anchor
            ghost.segments.append(segment)
            ghost.tokens += tokens
            ghost.hits = hits
        else:
            ghost = Ghost(anchor, tokens, [segment], hits)
        self.tokens += tokens  # the list holds the ghost's earlier segments already
        gone: list[Ghost] = []
        old = entries.pop(key, None)
        if old is not None:
            self.tokens -= old.tokens
            gone.append(old)
        entries[key] = ghost
        echoes = self._echoes
        if echoes:
            old_echo = echoes.pop(key, None)
            if old_echo is not None:
                self.echo_tokens -= old_echo.tokens
        if self.tokens > self.capacity:
            capacity, memory = self.capacity, self.memory
            while self.tokens > capacity and entries:
                dropped_key, dropped = entries.popitem(last=False)
                self.tokens -= dropped.tokens
                gone.append(dropped)
                if memory > 0:  # it stays as an echo
                    echoes[dropped_key] = dropped
                    self.echo_tokens += dropped.tokens
                    while self.echo_tokens > memory and echoes:
                        self.echo_tokens -= echoes.popitem(last=False)[1].tokens
        return gone

    def take(self, key: tuple[int, object], anchor: Any) -> Ghost | None:
        """The ghost under ``key`` if it hangs from ``anchor`` (it is then forgotten)."""
        ghost = self._entries.get(key)
        if ghost is None or ghost.anchor is not anchor:
            return None
        del self._entries[key]
        self.tokens -= ghost.tokens
        return ghost
