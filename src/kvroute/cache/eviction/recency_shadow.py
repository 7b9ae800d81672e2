"""``RecencyShadow``: plain LRU replayed beside a policy on the same stream, to tell when
recency alone would have hit more than the policy did.

Contract: the owner calls ``record(tokens, cached, now)`` for every sequence its cache
stores (the tree's ``on_stored`` hook: the page-aligned tokens and how many of them the
cache already held) and ``phase_end()`` when one of its phases ends; ``phase_end``
returns True when the shadow *leads*. ``holds(path)`` is how much of a path the shadow
holds now.

The shadow is a :class:`~kvroute.cache.radix.RadixCache` of the owner's capacity and page
with ``block_lru`` eviction (vLLM's: the oldest leaf's last pages, exactly what is
needed), served each recorded sequence at once (one insert: what it held already is
LRU's hit on the stream, one request at a time; the tree stamps a match's walk as it
does an insert's, so the insert alone leaves the state a match and insert would). Not
SGLang's leaf-LRU, which frees whole leaves and the whole allocation: in the cluster that
left 8-10% of each pool empty on conversations (docs/cache.md), a weaker recency to
follow; with ``block_lru`` the trace's one-cache cells at capacities a few blocks either
side of 5% no longer fall under 0.98x max(lru, rlt) (3 and 4 of 11 before).
Per phase it sums the owner's hit tokens, the shadow's and the squared per-sequence
differences, each decayed by ``memory`` a phase. It starts to lead when the shadow's
decayed hits exceed the owner's by more than one standard deviation of that sum (the
square root of the decayed squared differences): a lead that the per-request noise
explains is not one. It keeps the lead until the owner's hits exceed the shadow's by as
much (a band of two deviations, not one threshold): while the owner follows the shadow
their hits draw level, and with one threshold the lead flickered off in those phases, the
owner's contents drifted back and the shadow led again (on chat with its replies cached
it lost 1-2% to lru at 5% of the stream; docs/cache.md). A pause ends the lead.

Its walks cost about what the owner's tree's do, so it pauses while it is far behind
(its decayed hits under ``pause`` times the owner's: recency is no rival there) and
runs again for a probe phase every ``probe`` phases; a paused shadow's contents go
stale, which only lowers its hits (it never leads from a pause), and a probe phase
refreshes them.

Hits are compared where sequences are stored, not where they are matched: in a replay
the two are the same request. A simulated or emulated worker stores a request twice (the
prompt after its prefill, prompt and output at its end) and holds the prompt locked
meanwhile, which the shadow does not see: the second store counts the prompt as the
owner's hit and only what the shadow still holds as its own, so there the comparison
leans toward the owner (the shadow still led in most phases on agent sessions in the
cluster: docs/cache.md).

No clock or random generator of its own: ``now`` is the owner's cache's.
"""

from __future__ import annotations

import numpy as np

from kvroute.cache.eviction.block_lru import BlockLRU
from kvroute.cache.radix import RadixCache

__all__ = ["RecencyShadow"]


class RecencyShadow:
    def __init__(self, capacity: int, page_size: int, memory: float = 0.8,
                 pause: float = 0.5, probe: int = 8) -> None:
        self.tree = RadixCache(capacity, BlockLRU(), page_size=page_size)
        self.memory, self.pause, self.probe = memory, pause, probe
        self._own = self._lru = self._sq = 0  # this phase's sums
        self.own = self.lru = self.sq = 0.0  # decayed over the finished phases
        self.paused = False
        self.leads = False
        self._paused_for = 0

    def record(self, tokens: np.ndarray, cached: int, now: float) -> None:
        if self.paused:
            return
        hit = len(tokens) - self.tree.insert(tokens, now)  # tokens: page-aligned already
        self._own += cached
        self._lru += hit
        self._sq += (hit - cached) ** 2

    def phase_end(self) -> bool:
        """Fold this phase into the decayed sums; True if the shadow leads."""
        if self.paused:
            self._paused_for += 1
            self.paused = self._paused_for % self.probe != 0
            self.leads = False
            return False
        m = self.memory
        self.own = m * self.own + self._own
        self.lru = m * self.lru + self._lru
        self.sq = m * self.sq + self._sq
        self._own = self._lru = self._sq = 0
        self.paused = self.lru < self.pause * self.own
        self._paused_for = 0
        lead, noise = self.lru - self.own, self.sq ** 0.5
        self.leads = lead > noise or (self.leads and lead > -noise)
        return self.leads

    def holds(self, path: np.ndarray) -> int:
        """How many leading tokens of ``path`` the shadow holds (no effect on it)."""
        return self.tree.peek(path)
