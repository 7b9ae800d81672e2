"""RLT: randomized leaf-token marking eviction, the ideal algorithm (paper.md section 5).

Algorithm. Time is cut into phases. Every token accessed in the current phase is
*marked*: tokens a ``match`` hits and tokens an ``insert`` walks through or stores. To
free space, repeat: pick one token uniformly at random among the unmarked, unlocked
*leaf tokens* and evict it. In a token trie each leaf node has exactly one leaf token
(its last), so a step picks a candidate leaf node uniformly (not by its length) and
drops its last token (its last page when ``page_size`` > 1); a node whose last token
goes is deleted and its parent may become a candidate. When no candidate is left and
space is still needed, the phase ends: every mark is cleared and eviction goes on. It
evicts exactly what it is asked for (rounded up to a page) while unlocked tokens remain.

Parameters: ``seed`` or ``rng`` (a ``numpy.random.Generator``) for the random choices;
``sampler``, how the steps are drawn: ``"batches"`` (the default) or one of the other
exact samplers of :mod:`~kvroute.cache.eviction.rlt_samplers`, for tests and benchmarks.

How it is made fast without changing the process:

* Candidates live in one array partitioned as [unmarked | marked] unlocked leaves, with
  a parallel numpy array of their lengths in pages. Marking moves a leaf across the
  boundary in O(1) (inlined in ``on_access``); a new phase is ``epoch += 1`` and moving
  the boundary to the end, O(1) (a node is marked iff ``node.mark == epoch``). A new
  leaf is marked, so ``on_created`` just appends it.
* Sampling is exact, with O(1) numpy calls per batch and Python work only per leaf that
  empties: a call's steps are drawn in batches of i.i.d. uniform draws over the unmarked
  candidates' slots, and a slot whose leaf empties hands the slot to its parent when
  that becomes an unmarked candidate. The samplers (and the exact independent ones the
  tests compare: counts always counted or always multinomial, every event ordered in
  time, Poisson clocks) are in :mod:`~kvroute.cache.eviction.rlt_samplers`, chosen by
  the constructor's ``sampler``.
* Candidate lengths are trimmed lazily in the numpy array; the tree calls ``settle``
  before it reads a leaf's key, so beyond the numpy work a batch costs O(1) Python
  per leaf that empties, however many leaves it trims. Tree changes are applied after
  the batch, slot by slot: a promoted parent that survives takes its slot in place,
  dead slots leave the store together, and the emptied nodes (children before their
  parents) are unlinked without settling (a key still names its edge) and without the
  tree's candidacy hooks (``RadixCache.unlink_quietly``): the policy itself adds a
  marked parent that became a leaf.

Cost (``benchmarks/cache_bench.py``, docs/cache.md): a batch costs a few microseconds
of numpy calls whatever it evicts (the counts 1-8 us, the subtraction and ``argmin``
about 1.5 us), and the GSP stream at 200,000 tokens makes about 4,000 calls (one per
insert once the cache is full; lru makes 1,600, since it frees whole leaves) and 4,900
batches, 1,100 of them with leaves that empty (about 16 us each). That is about 63 ms
of eviction against lru's 12, on top of matches and inserts that alone take about as
long as lru's whole replay, so rlt stays about 2x lru's time on that stream. In a tree
of 10^6 tokens a call has only a few draws per candidate, so its counts come from one
counted draw per evicted token, and that dominates: about 10 ns a draw in place (page
faults on each fresh block of random bits included) against 3.5 ns in a tight loop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np

from kvroute.cache.eviction.policy import EvictionPolicy
from kvroute.cache.eviction.registry import register
from kvroute.cache.eviction.rlt_samplers import (
    Batch,
    SlotCounts,
    clock_round,
    follow_slots,
    in_time_order,
    sampler_named,
)
from kvroute.errors import IntegrityError

if TYPE_CHECKING:
    from kvroute.cache.radix import Node, RadixCache

__all__ = ["RLT"]


@register
class RLT(EvictionPolicy):
    name = "rlt"
    default_request: ClassVar[Literal["deficit", "allocation"]] = "deficit"
    lazy_trim = True
    takes_seed = True

    def __init__(self, seed: int | None = None, rng: np.random.Generator | None = None,
                 sampler: str = "batches") -> None:
        self.rng = rng if rng is not None else np.random.default_rng(seed)
        self.sampler = sampler_named(sampler)
        self._counts = SlotCounts(self.rng)
        self._resolve = follow_slots if self.sampler.follow_slots else in_time_order
        self.epoch = 1  # node.mark == epoch <=> marked in this phase (nodes start at 0)
        self.phases = 1
        self._nodes: list[Node] = []  # [0, u): unmarked candidates, [u, size): marked
        self._lens = np.zeros(1024, dtype=np.int64)  # pages, authoritative
        self._u = 0

    def attach(self, cache: RadixCache) -> None:
        super().attach(cache)
        self._page = cache.page_size

    # ---------------------------------------------------------------- the candidate store
    def _add(self, node: Node) -> None:
        nodes, lens = self._nodes, self._lens
        size = len(nodes)
        if size == lens.size:
            lens = self._lens = np.concatenate([lens, np.zeros(size, dtype=np.int64)])
        length = len(node.key) // self._page
        if node.mark == self.epoch:  # marked: at the end
            nodes.append(node)
            lens[size] = length
            node.slot = size
            return
        u = self._u  # unmarked: the first marked one moves to the end, node takes its place
        if u < size:
            first = nodes[u]
            nodes.append(first)
            lens[size] = lens[u]
            first.slot = size
            nodes[u] = node
        else:
            nodes.append(node)
        lens[u] = length
        node.slot = u
        self._u = u + 1

    def _drop(self, node: Node) -> None:
        """Take a candidate out of the store as it is (no settling)."""
        nodes, lens = self._nodes, self._lens
        pos, last = node.slot, len(nodes) - 1
        u1 = self._u - 1
        if pos <= u1:  # hole in the unmarked part: fill from its end, then from the last
            if pos != u1:
                other = nodes[u1]
                nodes[pos] = other
                lens[pos] = lens[u1]
                other.slot = pos
            pos = u1
            self._u = u1
        if pos != last:
            other = nodes[last]
            nodes[pos] = other
            lens[pos] = lens[last]
            other.slot = pos
        nodes.pop()
        node.slot = -1

    def _remove(self, node: Node) -> None:
        """Take a candidate out of the store, settling its key first."""
        self.settle(node)
        self._drop(node)

    def _to_marked(self, node: Node) -> None:
        pos, u1 = node.slot, self._u - 1
        if 0 <= pos <= u1:
            if pos != u1:
                nodes, lens = self._nodes, self._lens
                other = nodes[u1]
                nodes[pos], nodes[u1] = other, node
                lens[pos], lens[u1] = lens[u1], lens[pos]
                other.slot, node.slot = pos, u1
            self._u = u1

    def _new_phase(self) -> None:
        self.epoch += 1
        self.phases += 1
        self._u = len(self._nodes)

    def settle(self, node: Node) -> None:
        pos = node.slot
        if pos >= 0:
            keep = self._lens.item(pos) * self._page
            if keep < len(node.key):
                node.key = node.key[:keep]

    # ---------------------------------------------------------------- hooks
    def on_created(self, leaf: Node) -> None:
        leaf.mark = self.epoch
        if leaf.lock_ref == 0:  # a new leaf: a marked candidate, at the end of the store
            nodes, lens = self._nodes, self._lens
            size = len(nodes)
            if size == lens.size:
                lens = self._lens = np.concatenate([lens, np.zeros(size, dtype=np.int64)])
            nodes.append(leaf)
            lens[size] = len(leaf.key) // self._page
            leaf.slot = size

    def on_access(self, node: Node, hit: bool) -> None:
        epoch = self.epoch
        if node.mark != epoch:  # _to_marked, inlined: this runs for every node a walk passes
            node.mark = epoch
            pos, u1 = node.slot, self._u - 1
            if 0 <= pos <= u1:
                if pos != u1:
                    nodes, lens = self._nodes, self._lens
                    other = nodes[u1]
                    nodes[pos], nodes[u1] = other, node
                    lens[pos], lens[u1] = lens[u1], lens[pos]
                    other.slot, node.slot = pos, u1
                self._u = u1

    def on_split(self, prefix: Node, suffix: Node, in_match: bool) -> None:
        prefix.mark = suffix.mark
        if suffix.slot >= 0:  # a candidate leaf lost its head to the new prefix
            self._lens[suffix.slot] = len(suffix.key) // self._page

    def on_candidacy(self, node: Node) -> None:
        if node.parent is not None and not node.children and node.lock_ref == 0:
            if node.slot < 0:
                self._add(node)
        elif node.slot >= 0:
            self._remove(node)

    def on_removed(self, node: Node) -> None:
        if node.slot >= 0:
            self._remove(node)

    # ---------------------------------------------------------------- eviction
    def _unmarked_tokens(self) -> int:
        return int(self._lens[: self._u].sum()) * self._page

    def evict(self, n: int) -> int:
        page = self._page
        need = -(-n // page)
        done = 0
        cache = self.cache
        listening = cache.listening
        sampler = self.sampler
        by_clocks, min_slots = sampler.draws_per_candidate, sampler.count_min_slots
        per_slot, counted, multinomial = (sampler.count_draws_per_slot, self._counts.counted,
                                          self._counts.multinomial)
        while done < need:
            k = self._u
            if k == 0:
                if not self._nodes:
                    break  # everything left is locked
                self._new_phase()
                continue
            rem = need - done
            if rem > by_clocks * k:
                counts, steps, first = clock_round(self.rng, self._lens[:k], rem)
                emptied = self._nodes[first] if first >= 0 else None
                self._take(counts, steps)
                done += steps
                if emptied is not None:
                    self._delete(emptied)
                continue
            # one batch of rem i.i.d. uniform draws over the k unmarked slots
            if k >= min_slots and rem <= per_slot * k:
                counts = counted(k, rem)
            else:
                counts = multinomial(k, rem)
            lens = self._lens[:k]
            if listening:
                self._emit_trims(counts, lens)
            lens -= counts
            if lens.item(lens.argmin()) > 0:  # the common case: nobody empties
                cache.discard(rem * page)
                done += rem
            else:  # some slots were drawn at least their length: they empty
                full = (lens <= 0).nonzero()[0].tolist()
                batch = self._resolve(self._nodes, rem, counts, lens, full, cache.root,
                                      self.epoch, page, self.rng)
                self._apply(counts, full, batch, listening)
                done += batch.steps
        return done * page

    def _apply(self, counts: np.ndarray, full: list[int], batch: Batch,
               listening: bool) -> None:
        """Apply a resolved batch (the other slots' draws are already taken off their
        lengths): unlink ``gone`` (children before parents), put each surviving promoted
        parent in its slot with its pages left (``kept``), take the ``dead`` slots out of
        the store, and add the ``orphans`` that became (marked) candidate leaves. The
        tree's candidacy hooks are not called for these nodes: this is their update."""
        lens, nodes, page, cache = self._lens, self._nodes, self._page, self.cache
        gone, dead, kept, orphans, steps = batch
        if listening:  # every removed span, before the tree changes
            for s in full:  # the emptied candidates' spans are sent whole
                lens[s] += counts[s]
            for node in gone:
                old = lens.item(node.slot) if node.slot >= 0 else len(node.key) // page
                self._emit_removed(node, 0, old)
            for _, node, left in kept:
                old = len(node.key) // page
                if left < old:  # drawn after its promotion
                    self._emit_removed(node, left, old)
        cache.discard(steps * page)
        for node in gone:
            node.slot = -1
        cache.unlink_quietly(gone)
        for s, node, left in kept:
            nodes[s] = node
            node.slot = s
            lens[s] = left
        if dead:
            dead.sort(reverse=True)  # each hole is filled from positions past it
            last = len(nodes) - 1
            u1 = self._u - 1
            for pos in dead:
                if pos != u1:
                    other = nodes[u1]
                    nodes[pos] = other
                    lens[pos] = lens.item(u1)
                    other.slot = pos
                if u1 != last:
                    other = nodes[last]
                    nodes[u1] = other
                    lens[u1] = lens.item(last)
                    other.slot = u1
                nodes.pop()
                u1 -= 1
                last -= 1
            self._u = u1 + 1
            for node in orphans:
                if (node.slot < 0 and node.parent is not None and not node.children
                        and node.lock_ref == 0):
                    self._add(node)

    def _emit_removed(self, node: Node, keep: int, old: int) -> None:
        """Send the removed event for pages [keep, old) of a candidate (before they go)."""
        cache, page = self.cache, self._page
        assert node.parent is not None
        key = node.key
        prefix = cache.path_of(node.parent)
        cache.emit_removed(np.concatenate([prefix, key[: keep * page]]),
                           key[keep * page: old * page])

    def _emit_trims(self, counts: np.ndarray, lens: np.ndarray) -> None:
        """Removed events for a batch's draws (``lens`` not yet reduced); the slots that
        empty are skipped here, their whole span is sent when they are deleted."""
        nodes = self._nodes
        for pos in np.flatnonzero(counts).tolist():
            old, c = lens.item(pos), counts.item(pos)
            if c < old:
                self._emit_removed(nodes[pos], old - c, old)

    def _take(self, counts: np.ndarray, steps: int) -> None:
        """Apply ``steps`` single-page evictions, ``counts`` per unmarked candidate (a
        candidate taken to 0 must be ``_delete``d next)."""
        k = counts.size
        lens = self._lens[:k]
        if self.cache.listening:  # events need the exact spans
            nodes = self._nodes
            for pos in np.flatnonzero(counts).tolist():
                old = lens.item(pos)
                self._emit_removed(nodes[pos], old - counts.item(pos), old)
        lens -= counts
        self.cache.discard(steps * self._page)

    def _delete(self, node: Node) -> None:
        """Unlink a candidate whose pages are all accounted as gone. Its key is still
        untrimmed (trims are lazy and nothing settled it since its length ran out), so
        its first page names the edge while it is unlinked."""
        self._drop(node)
        self.cache.unlink_leaf(node)

    def check(self) -> None:
        cache = self.cache
        store = set()
        for pos, node in enumerate(self._nodes):
            self.settle(node)
            if node.slot != pos:
                raise IntegrityError(f"rlt: {node} at position {pos} thinks it is at {node.slot}")
            if not self.is_candidate(node):
                raise IntegrityError(f"rlt: {node} in the candidate store is not an unlocked leaf")
            if (pos < self._u) == (node.mark == self.epoch):
                raise IntegrityError(f"rlt: {node} is on the wrong side of the marked boundary")
            if int(self._lens[pos]) * self._page != len(node.key):
                raise IntegrityError(f"rlt: stored length of {node} disagrees with its key")
            store.add(id(node))
        for node in cache.nodes():
            if self.is_candidate(node) and id(node) not in store:
                raise IntegrityError(f"rlt: unlocked leaf {node} missing from the candidate store")
            if not self.is_candidate(node) and node.slot >= 0:
                raise IntegrityError(f"rlt: {node} has a store position but is no candidate")
