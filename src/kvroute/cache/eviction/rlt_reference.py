"""The RLT process done the straightforward way, as the official code does it.

Same marking and the same distribution as :mod:`~kvroute.cache.eviction.rlt` (every
access marks; one uniformly random unmarked unlocked leaf token per step; a phase ends
when no candidate is left), but implemented like the authors' code: every eviction call
collects the candidates by a full traversal of the tree, a new phase clears the marks by
another traversal, and each evicted token (page) costs one Python RNG draw and an eager
trim. It exists as the baseline of ``benchmarks/cache_bench.py`` and as the reference
process the tests compare the fast version with. Do not use it for real runs.

Parameters: ``seed`` for its ``random.Random``.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from kvroute.cache.eviction.policy import EvictionPolicy
from kvroute.cache.eviction.registry import register

if TYPE_CHECKING:
    from kvroute.cache.radix import Node

__all__ = ["ReferenceRLT"]


@register
class ReferenceRLT(EvictionPolicy):
    name = "rlt_reference"
    default_request = "deficit"
    takes_seed = True

    def __init__(self, seed: int | None = None) -> None:
        self.rng = random.Random(seed)

    def on_created(self, leaf: Node) -> None:
        leaf.mark = 1

    def on_access(self, node: Node, hit: bool) -> None:
        node.mark = 1

    def _candidates(self) -> list[Node]:
        return [x for x in self.cache.nodes() if self.is_candidate(x) and not x.mark]

    def evict(self, n: int) -> int:
        cache = self.cache
        page = cache.page_size
        need, done = -(-n // page), 0
        cands = self._candidates()
        while done < need:
            if not cands:
                if cache.evictable == 0:
                    break
                for x in cache.nodes():  # the phase ends: clear every mark
                    x.mark = 0
                cands = self._candidates()
                continue
            i = self.rng.randrange(len(cands))
            leaf = cands[i]
            parent = leaf.parent
            cache.trim_leaf(leaf, page)
            done += 1
            if leaf.parent is None:  # emptied: swap-remove, maybe promote the parent
                cands[i] = cands[-1]
                cands.pop()
                if parent is not None and self.is_candidate(parent) and not parent.mark:
                    cands.append(parent)
        return done * page
