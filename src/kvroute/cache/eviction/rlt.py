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

Parameters: ``seed`` or ``rng`` (a ``numpy.random.Generator``) for the random choices.

How it is made fast without changing the process:

* Candidates live in one array partitioned as [unmarked | marked] unlocked leaves, with
  a parallel numpy array of their lengths in pages. Marking moves a leaf across the
  boundary in O(1) (inlined in ``on_access``); a new phase is ``epoch += 1`` and moving
  the boundary to the end, O(1) (a node is marked iff ``node.mark == epoch``). A new
  leaf is marked, so ``on_created`` just appends it.
* Sampling is exact, with O(1) numpy calls per batch and Python work only per leaf that
  empties. (1) Batches (the default): a call's rem steps are rem i.i.d. uniform draws
  over k *slots*, one per unmarked candidate. When a slot's leaf has had L draws it
  empties; its parent, if that becomes an unmarked candidate, takes over the slot (k
  candidates again, so later draws stay uniform over them), else the slot is dead and
  its later draws are rejected (the others stay uniform over the k - 1 live ones); a new
  batch makes up for rejected draws. What matters is each slot's count, a multinomial:
  one numpy draw, or, with at least 16 slots and at most 32 draws per slot (where numpy's
  binomials invert and cost in proportion to the draws), a bincount of buffered 32-bit
  draws x, slot
  x // (2^32 // k), the values past the last multiple of k landing in an extra bin and
  drawn again. The counts are taken off the lengths in place and one ``argmin`` tells
  whether any slot was drawn at least its length ("full"). A batch where nobody empties
  (about three in four on the GSP stream) costs the counts, that subtraction and the
  ``argmin``.
  Full slots: each slot's chain (leaf, promoted parent, its parent...) is followed on
  its own, which is exact because the order of events in different slots matters only
  through a parent with two or more children that all empty in the batch: the last of
  them to empty promotes it into its slot, the others' slots die. Such a parent makes
  its children's chains wait; when its last child has emptied, their times decide: give
  every draw an i.i.d. uniform time (this makes the order of the draws uniformly random
  given the counts, as it is); a slot's L-th of c draws comes at ~Beta(L, c - L + 1)
  and a promoted parent's L'-th later draw at a Beta order statistic of the rest. These
  Betas are drawn lazily, only for such parents (``_resolve_timed``, which orders every
  event in time with a heap, is kept as an independent method the tests force).
  (2) Poissonisation (kept as an independent exact method, forced by the tests):
  give every candidate leaf an independent rate-1 Poisson clock; the merged arrivals
  are then i.i.d. uniform choices among the candidates, the same single-token steps
  as the algorithm. Leaf i empties at its L_i-th arrival, at time E_i ~ Gamma(L_i), so
  one round draws all E_i, takes the first leaf to empty (time T), and draws every other
  leaf's arrivals by T as Poisson(T) conditioned on being below its length. If that is
  more steps than the call still needs, the first ``rem`` steps are a uniformly random
  part of those arrivals (a multivariate hypergeometric draw) and no leaf empties. A
  round costs O(candidates) in numpy; there is one round per deleted leaf plus one per
  call.
* Candidate lengths are trimmed lazily in the numpy array; the tree calls ``settle``
  before it reads a leaf's key, so beyond the numpy work a batch costs O(1) Python
  per leaf that empties, however many leaves it trims. Tree changes are applied after
  the batch, slot by slot: a promoted parent that survives takes its slot in place,
  dead slots leave the store together, and the emptied nodes (children before their
  parents) are unlinked without settling (a key still names its edge) and without the
  tree's candidacy hooks (``RadixCache._unlink_quietly``): the policy itself adds a
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

import heapq
from typing import TYPE_CHECKING, ClassVar, Literal, cast

import numpy as np

from kvroute.cache.eviction.base import EvictionPolicy
from kvroute.cache.eviction.registry import register
from kvroute.errors import IntegrityError

if TYPE_CHECKING:
    from kvroute.cache.radix import Node, RadixCache

__all__ = ["RLT"]

# A call is sampled by batches of draws when it needs at most this many steps per unmarked
# candidate, else by Poisson clocks. Both are exact; batches measured faster at every tree
# size (benchmarks/cache_bench.py), so the clocks only run when a test forces them (0).
_DRAWS_PER_CANDIDATE: float = float("inf")
_BLOCK = 1 << 16  # uniform draws fetched from the generator at a time
# A batch's per-slot counts come from counting single draws when there are at least
# _COUNT_MIN_SLOTS slots and at most _COUNT_DRAWS_PER_SLOT draws per slot, else from one
# multinomial draw. Measured: numpy's multinomial costs about 1 us plus, per slot, 0.05 us
# at 4 draws, 0.2 us at 24 (its binomials invert below 30) and 0.1 us from 32 on; counting
# costs about 2 us plus 3 ns a draw. So few slots always take the multinomial.
_COUNT_DRAWS_PER_SLOT = 32
_COUNT_MIN_SLOTS = 16
# Batches in which leaves empty follow each slot's chain on its own and order events in
# time only where the order matters (a parent whose children all empty); False orders
# every event in time (both exact; the tests force False).
_FOLLOW_SLOTS = True

# a chain of emptying draws in one slot: (the slot, its draws, index of the draw that
# empties the node, the node, its event [time or -1, previous event, Beta a, Beta b])
_Chain = tuple[int, int, int, "Node", list]


@register
class RLT(EvictionPolicy):
    name = "rlt"
    default_request: ClassVar[Literal["deficit", "allocation"]] = "deficit"
    lazy_trim = True

    def __init__(self, seed: int | None = None, rng: np.random.Generator | None = None) -> None:
        self.rng = rng if rng is not None else np.random.default_rng(seed)
        self.epoch = 1  # node.mark == epoch <=> marked in this phase (nodes start at 0)
        self.phases = 1
        self._nodes: list[Node] = []  # [0, u): unmarked candidates, [u, size): marked
        self._lens = np.zeros(1024, dtype=np.int64)  # pages, authoritative
        self._u = 0
        self._buf = np.zeros(0, dtype=np.uint32)  # pre-drawn 32-bit integers
        self._buf_pos = 0
        self._uniform: dict[int, np.ndarray] = {}  # k -> [1/k] * k
        self._divisor: dict[int, np.uint32] = {}  # k -> 2^32 // k (a numpy scalar divides faster)

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
        while done < need:
            k = self._u
            if k == 0:
                if not self._nodes:
                    break  # everything left is locked
                self._new_phase()
                continue
            rem = need - done
            if rem > _DRAWS_PER_CANDIDATE * k:
                steps, emptied = self._round_by_clocks(self._lens[:k], rem)
                done += steps
                if emptied is not None:
                    self._delete(emptied)
                continue
            # one batch of rem i.i.d. uniform draws over the k unmarked slots
            if k >= _COUNT_MIN_SLOTS and rem <= _COUNT_DRAWS_PER_SLOT * k:
                counts = self._count_draws(k, rem)
            else:
                pvals = self._uniform.get(k)
                if pvals is None:
                    pvals = self._pvals(k)
                counts = self.rng.multinomial(rem, pvals)
            lens = self._lens[:k]
            if listening:
                self._emit_trims(counts, lens)
            lens -= counts
            if lens.item(lens.argmin()) > 0:  # the common case: nobody empties
                cache._discard(rem * page)
                done += rem
            else:
                done += self._resolve(k, rem, counts, lens, listening)
        return done * page

    def _pvals(self, k: int) -> np.ndarray:
        if len(self._uniform) > 256:
            self._uniform.clear()
        pvals = self._uniform[k] = np.full(k, 1.0 / k)
        return pvals

    def _count_draws(self, k: int, b: int) -> np.ndarray:
        """How often each of k slots is hit by b i.i.d. uniform draws, counted from a
        buffer of 32-bit integers drawn in blocks from the seeded generator's bit stream:
        x goes to slot x // m with m = 2^32 // k (the division by a constant is much
        cheaper than a remainder). Exact: values at or past k * m, which land in an extra
        bin k, are rejected and drawn again (this keeps the rest i.i.d. uniform)."""
        if k == 1:
            return np.full(1, b, dtype=np.int64)
        pos = self._buf_pos
        if pos + b > self._buf.size:
            block = self.rng.bit_generator.random_raw(max(_BLOCK, b) // 2 + 1)
            self._buf = block.view(np.uint32)  # uniform on [0, 2^32)
            pos = 0
        self._buf_pos = pos + b
        m = self._divisor.get(k)
        if m is None:
            if len(self._divisor) > 4096:
                self._divisor.clear()
            m = self._divisor[k] = np.uint32((1 << 32) // k)
        counts = np.bincount(self._buf[pos:pos + b] // m, minlength=k)
        if counts.size > k:  # rare: some were rejected
            counts = counts[:k] + self._count_draws(k, counts.item(k))
        return counts

    def _resolve(self, k: int, rem: int, counts: np.ndarray, lens: np.ndarray,
                 listening: bool) -> int:
        """A batch in which some slots were drawn at least their length ("full"; ``lens``
        is already reduced by ``counts``, so theirs are <= 0). Slot s holds candidate
        ``nodes[s]``; it empties at its L-th draw. Then its parent, if that becomes an
        unmarked candidate, takes over the slot (the candidate set has k members again,
        so later draws stay uniform over it) and empties in turn at its L'-th later draw;
        otherwise the slot is dead and its later draws are rejected (the others stay
        uniform over the live slots). Returns the steps done: rem minus the rejections.

        The order of events in different slots matters only through a parent with two or
        more children that all empty in the batch: the last of them to empty promotes it
        into its own slot (the others' slots die). So each slot's chain is followed on
        its own; a chain that reaches such a parent waits there, and when the parent's
        last child has emptied, the times of its children's emptying draws decide which
        slot takes it. Event times are drawn only then, lazily, as in ``_resolve_timed``:
        the L-th of a slot's c draws comes at ~Beta(L, c - L + 1), and a promoted
        parent's L'-th later draw at a Beta order statistic of the later ones."""
        full = (lens <= 0).nonzero()[0].tolist()
        if not _FOLLOW_SLOTS:
            return self._resolve_timed(k, rem, counts, lens, full, listening)
        nodes = self._nodes
        root, epoch, page = self.cache.root, self.epoch, self._page
        gone: list[Node] = []  # emptied nodes, children before their parents
        dead: list[int] = []  # slots left without a candidate
        kept: list[tuple[int, Node, int]] = []  # (slot, promoted parent that survives, pages)
        orphans: list[Node] = []  # parents of nodes whose slot died: candidates now?
        waiting: dict[int, list[_Chain]] = {}  # id(parent) -> chains waiting at it
        rejected = 0
        work: list[_Chain] = []
        for s in full:
            node = nodes[s]
            parent = node.parent
            assert parent is not None
            if parent is root or parent.lock_ref or parent.mark == epoch:  # the usual case
                gone.append(node)  # the slot dies at once (as in the loop below)
                dead.append(s)
                rejected -= lens.item(s)  # its c - L draws after the L-th
                orphans.append(parent)
                continue
            c = counts.item(s)
            length = lens.item(s) + c
            # (slot, its draws, index of the draw that empties the node, node, its event)
            work.append((s, c, length - 1, node, [-1.0, None, length, c - length + 1]))
        while work:
            s, c, i, node, event = work.pop()
            while True:
                gone.append(node)
                parent = node.parent
                assert parent is not None
                if parent is root or parent.lock_ref or parent.mark == epoch:
                    dead.append(s)  # the slot dies: its later draws are rejected
                    rejected += c - i - 1
                    orphans.append(parent)
                    break
                siblings = len(parent.children)
                if siblings > 1:
                    group = waiting.setdefault(id(parent), [])
                    group.append((s, c, i, node, event))
                    if len(group) < siblings:
                        break  # waits: dies unless it turns out to be the last child
                    del waiting[id(parent)]
                    times = [self._event_time(g[4]) for g in group]
                    last = times.index(max(times))
                    for j, (s2, c2, i2, _, _) in enumerate(group):
                        if j != last:
                            dead.append(s2)
                            rejected += c2 - i2 - 1
                    s, c, i, node, event = group[last]
                # the parent is promoted into the slot
                length, after = len(parent.key) // page, c - i - 1
                if length <= after:  # it empties too, at the length-th later draw
                    i += length
                    node = parent
                    event = [-1.0, event, length, after - length + 1]
                    continue
                kept.append((s, parent, length - after))
                break
        for group in waiting.values():  # parents that keep a child: those slots die
            for s, c, i, _, _ in group:
                dead.append(s)
                rejected += c - i - 1
        steps = rem - rejected
        self._apply(counts, full, gone, dead, kept, orphans, steps, listening)
        return steps

    def _event_time(self, event: list) -> float:
        """The time in (0, 1) of an emptying draw, drawn once when first asked for:
        [time or -1, the slot's previous event or None, a, b] with the time ~ Beta(a, b)
        on what is left of (0, 1) after the previous event."""
        if event[0] < 0:
            prev = event[1]
            start = 0.0 if prev is None else self._event_time(prev)
            event[0] = start + (1.0 - start) * self.rng.beta(event[2], event[3])
        return float(event[0])

    def _resolve_timed(self, k: int, rem: int, counts: np.ndarray, lens: np.ndarray,
                       full: list[int], listening: bool) -> int:
        """``_resolve`` with the events in time order: give every draw an i.i.d. uniform
        time (this makes the order of the draws uniformly random given the counts, as it
        is); the L-th of a slot's c draws comes at ~Beta(L, c - L + 1), and a promoted
        parent's L'-th later draw at a Beta order statistic of the c - L later ones."""
        beta = self.rng.beta
        cs = counts[full]
        lengths = lens[full] + cs
        times = beta(lengths, cs - lengths + 1).tolist()  # each slot's L-th of c uniforms
        sizes = dict(zip(full, cs.tolist(), strict=True))  # slot -> draws
        at = {s: length - 1 for s, length in zip(full, lengths.tolist(), strict=True)}
        events = list(zip(times, full, strict=True))  # (time in (0, 1), slot)
        heapq.heapify(events)
        owner = cast("list[Node | None]", self._nodes[:k])  # current candidate per slot
        since: dict[int, int] = {}  # promoted slot -> index of its candidate's first draw
        gone: list[Node] = []
        orphans: list[Node] = []
        pending: dict[int, int] = {}  # id(parent) -> children emptied in this batch
        root, epoch, page = self.cache.root, self.epoch, self._page
        rejected = 0
        while events:  # no slot can be left without events while others are live
            e, s = heapq.heappop(events)
            node = owner[s]
            assert node is not None
            parent = node.parent
            assert parent is not None
            left = pending[id(parent)] = pending.get(id(parent), 0) + 1
            i = at[s]
            gone.append(node)
            if (parent is not root and len(parent.children) == left and parent.lock_ref == 0
                    and parent.mark != epoch):  # the parent becomes a candidate in slot s
                owner[s] = parent
                since[s] = i + 1
                length, after = len(parent.key) // page, sizes[s] - i - 1
                if length <= after:  # it empties too: the length-th of the later draws
                    at[s] = i + length
                    heapq.heappush(events, (e + (1 - e) * beta(length, after - length + 1), s))
            else:
                owner[s] = None
                orphans.append(parent)
                rejected += sizes[s] - i - 1
        dead = [s for s in full if owner[s] is None]
        kept = []
        for s, first in since.items():
            parent = owner[s]
            if parent is not None:  # promoted and survived
                kept.append((s, parent, len(parent.key) // page - (sizes[s] - first)))
        steps = rem - rejected
        self._apply(counts, full, gone, dead, kept, orphans, steps, listening)
        return steps

    def _apply(self, counts: np.ndarray, full: list[int], gone: list[Node], dead: list[int],
               kept: list[tuple[int, Node, int]], orphans: list[Node], steps: int,
               listening: bool) -> None:
        """Apply a resolved batch (the other slots' draws are already taken off their
        lengths): unlink ``gone`` (children before parents), put each surviving promoted
        parent in its slot with its pages left (``kept``), take the ``dead`` slots out of
        the store, and add the ``orphans`` that became (marked) candidate leaves. The
        tree's candidacy hooks are not called for these nodes: this is their update."""
        lens, nodes, page, cache = self._lens, self._nodes, self._page, self.cache
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
        cache._discard(steps * page)
        for node in gone:
            node.slot = -1
        cache._unlink_quietly(gone)
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
        cache._emit("removed", np.concatenate([prefix, key[: keep * page]]),
                    key[keep * page: old * page])

    def _emit_trims(self, counts: np.ndarray, lens: np.ndarray) -> None:
        """Removed events for a batch's draws (``lens`` not yet reduced); the slots that
        empty are skipped here, their whole span is sent when they are deleted."""
        nodes = self._nodes
        for pos in np.flatnonzero(counts).tolist():
            old, c = lens.item(pos), counts.item(pos)
            if c < old:
                self._emit_removed(nodes[pos], old - c, old)

    def _round_by_clocks(self, lens: np.ndarray, rem: int) -> tuple[int, Node | None]:
        """Poissonisation: leaf i empties at its lens[i]-th arrival, at ~Gamma(lens[i])."""
        rng = self.rng
        empties = rng.standard_gamma(lens)
        first = int(empties.argmin())
        counts = self._counts_before(float(empties[first]), lens, first)
        counts[first] = int(lens[first])
        steps = int(counts.sum())
        if steps > rem:  # the call ends before the leaf empties: the first rem arrivals
            counts[first] -= 1
            self._take(rng.multivariate_hypergeometric(counts, rem), rem)
            return rem, None
        self._take(counts, steps)
        return steps, self._nodes[first]

    def _counts_before(self, t: float, lens: np.ndarray, first: int) -> np.ndarray:
        """Arrivals by time t of every other leaf: Poisson(t) given fewer than its length."""
        rng = self.rng
        counts = rng.poisson(t, lens.size)
        counts[first] = 0
        idx = np.flatnonzero(counts >= lens)
        tries = 0
        while idx.size:  # rejection: accepted with probability P(Gamma(lens) > t)
            if tries < 20:
                counts[idx] = rng.poisson(t, idx.size)
            else:  # unlucky: inverse transform on the truncated distribution
                for j in idx.tolist():
                    support = np.arange(int(lens[j]))
                    logp = support * np.log(t) - np.concatenate(
                        [[0.0], np.cumsum(np.log(support[1:]))])
                    p = np.exp(logp - logp.max())
                    counts[j] = rng.choice(support.size, p=p / p.sum())
            idx = idx[counts[idx] >= lens[idx]]
            tries += 1
        return counts

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
        self.cache._discard(steps * self._page)

    def _delete(self, node: Node) -> None:
        """Unlink a candidate whose pages are all accounted as gone. Its key is still
        untrimmed (trims are lazy and nothing settled it since its length ran out), so
        its first page names the edge while it is unlinked."""
        self._drop(node)
        self.cache._unlink_leaf(node)

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
