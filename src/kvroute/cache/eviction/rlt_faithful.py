"""RLT as the authors implemented it (SGLang 0.4.6 fork, ``--enable-lrt``), for
reproducing the paper (paper.md section 5, "Official implementation").

Differences from the ideal :mod:`~kvroute.cache.eviction.rlt`:

* Marking happens in ``insert`` (every node it walks through, split prefixes and the new
  leaf) and, in ``match``, only on the prefix part created by a split; fully matched
  nodes are marked later, when the finished request is inserted.
* ``marked_count`` counts the tokens marked in the phase; ``phase_limit`` is the cache
  capacity. A phase ends (a) at an eviction call when ``n + marked_count >=
  phase_limit``; (b) at an eviction call when the unmarked unlocked leaf tokens are fewer
  than n; (c) while marking, when ``marked_count >= phase_limit``: the path of the node
  just accessed is marked again in the new phase. As in the ideal algorithm, a phase
  also ends when candidates run out in the middle of a call.
* Like SGLang, ``insert`` asks it to free the whole allocation, and it evicts exactly the
  n it is asked for while candidates last.

What is kept from the ideal version: the uniform choice among unmarked unlocked leaf
tokens, a seeded generator (the official RNG is unseeded), and the incremental
candidate store instead of a full traversal per call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kvroute.cache.eviction.registry import register
from kvroute.cache.eviction.rlt import RLT

if TYPE_CHECKING:
    from kvroute.cache.radix import Node, RadixCache

__all__ = ["FaithfulRLT"]


@register
class FaithfulRLT(RLT):
    name = "rlt_faithful"
    default_request = "allocation"

    def attach(self, cache: RadixCache) -> None:
        super().attach(cache)
        self.phase_limit = cache.capacity
        self.marked_count = 0

    def _mark(self, node: Node) -> None:
        if node.mark == self.epoch:
            return
        node.mark = self.epoch
        self._to_marked(node)
        self.marked_count += len(node.key)
        if self.marked_count >= self.phase_limit:  # trigger (c)
            self._new_phase()
            while node.parent is not None:
                node.mark = self.epoch
                self._to_marked(node)
                self.marked_count += len(node.key)
                node = node.parent

    def _new_phase(self) -> None:
        super()._new_phase()
        self.marked_count = 0

    def on_created(self, leaf: Node) -> None:
        self.on_candidacy(leaf)
        self._mark(leaf)

    def on_access(self, node: Node, hit: bool) -> None:
        if not hit:
            self._mark(node)

    def on_split(self, prefix: Node, suffix: Node, in_match: bool) -> None:
        super().on_split(prefix, suffix, in_match)
        if in_match:
            self._mark(prefix)

    def evict(self, n: int) -> int:
        if n + self.marked_count >= self.phase_limit or self._unmarked_tokens() < n:
            self._new_phase()  # triggers (a) and (b)
        return super().evict(n)
