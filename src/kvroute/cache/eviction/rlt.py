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
  boundary in O(1); a new phase is ``epoch += 1`` and moving the boundary to the end,
  O(1) (a node is marked iff ``node.mark == epoch``).
* Sampling is exact, with O(1) numpy calls per eviction call and Python work only per
  leaf that empties. (1) Batches (the default): the call's rem steps are rem i.i.d.
  uniform draws over k *slots*, one per unmarked candidate. When a slot's leaf has
  had L draws it empties; its parent, if that becomes an unmarked candidate, takes
  over the slot (k candidates again, so later draws stay uniform over them), else the
  slot is dead and its later draws are rejected (the others stay uniform over the
  k - 1 live ones); a new batch makes up for rejected draws. What matters is only
  each slot's count, a multinomial (one numpy draw, or counting buffered draws when
  few per slot), and, for the "full" slots counted at least L, the order of their own
  draws: give every draw an i.i.d. uniform time; a slot's L-th draw comes at the L-th
  of its c uniforms, ~ Beta(L, c - L + 1), and a promoted parent's L'-th later draw
  at a Beta order statistic of the rest. One scalar Beta per leaf that empties orders
  the events. A batch where nobody empties costs a multinomial and two array ops.
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
  per leaf that empties, however many leaves it trims. Tree changes (deletions,
  promotions) are applied after the batch, in event order.
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
# A batch's per-slot counts come from counting single draws up to this many per slot,
# else from one multinomial draw (measured crossover, benchmarks/cache_bench.py sizes).
_COUNT_DRAWS_PER_SLOT = 16


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
        self._buf = np.zeros(0, dtype=np.int64)  # pre-drawn 32-bit integers
        self._buf_pos = 0
        self._buf_max = 0
        self._uniform: dict[int, np.ndarray] = {}  # k -> [1/k] * k

    def attach(self, cache: RadixCache) -> None:
        super().attach(cache)
        self._page = cache.page_size

    # ---------------------------------------------------------------- the candidate store
    def _place(self, node: Node, pos: int, length: int) -> None:
        self._nodes[pos] = node
        self._lens[pos] = length
        node.slot = pos

    def _add(self, node: Node) -> None:
        size = len(self._nodes)
        if size == len(self._lens):
            self._lens = np.concatenate([self._lens, np.zeros(size, dtype=np.int64)])
        self._nodes.append(node)
        length = len(node.key) // self._page
        if node.mark == self.epoch:  # marked: at the end
            self._place(node, size, length)
        else:  # unmarked: first marked one moves to the end, node takes its place
            u = self._u
            if u < size:
                self._place(self._nodes[u], size, int(self._lens[u]))
            self._place(node, u, length)
            self._u = u + 1

    def _remove(self, node: Node) -> None:
        """Take a candidate out of the store, settling its key first."""
        self.settle(node)
        pos, last = node.slot, len(self._nodes) - 1
        if pos < self._u:  # hole in the unmarked part: fill from its end, then from the last
            u1 = self._u - 1
            if pos != u1:
                self._place(self._nodes[u1], pos, int(self._lens[u1]))
            pos = u1
            self._u = u1
        if pos != last:
            self._place(self._nodes[last], pos, int(self._lens[last]))
        self._nodes.pop()
        node.slot = -1

    def _to_marked(self, node: Node) -> None:
        pos, u1 = node.slot, self._u - 1
        if 0 <= pos <= u1:
            other, olen = self._nodes[u1], int(self._lens[u1])
            self._place(node, u1, int(self._lens[pos]))
            if other is not node:
                self._place(other, pos, olen)
            self._u = u1

    def _mark(self, node: Node) -> None:
        if node.mark != self.epoch:
            node.mark = self.epoch
            self._to_marked(node)

    def _new_phase(self) -> None:
        self.epoch += 1
        self.phases += 1
        self._u = len(self._nodes)

    def settle(self, node: Node) -> None:
        if node.slot >= 0:
            keep = int(self._lens[node.slot]) * self._page
            if keep < len(node.key):
                node.key = node.key[:keep]

    # ---------------------------------------------------------------- hooks
    def on_created(self, leaf: Node) -> None:
        leaf.mark = self.epoch
        self.on_candidacy(leaf)

    def on_access(self, node: Node, hit: bool) -> None:
        self._mark(node)

    def on_split(self, prefix: Node, suffix: Node, in_match: bool) -> None:
        prefix.mark = suffix.mark
        if suffix.slot >= 0:  # a candidate leaf lost its head to the new prefix
            self._lens[suffix.slot] = len(suffix.key) // self._page

    def on_candidacy(self, node: Node) -> None:
        want = node.parent is not None and not node.children and node.lock_ref == 0
        if want and node.slot < 0:
            self._add(node)
        elif not want and node.slot >= 0:
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
        while done < need:
            k = self._u
            if k == 0:
                if not self._nodes:
                    break  # everything left is locked
                self._new_phase()
                continue
            rem = need - done
            if rem <= _DRAWS_PER_CANDIDATE * k:
                done += self._round_by_draws(k, rem)
                continue
            steps, emptied = self._round_by_clocks(self._lens[:k], rem)
            done += steps
            if emptied is not None:
                self._delete(emptied)
        return done * page

    def _draws(self, k: int, b: int) -> np.ndarray:
        """b i.i.d. uniform slots in [0, k), from a buffer of 32-bit integers drawn in
        blocks from the seeded generator's bit stream (exact: values past the largest
        multiple of k are dropped, which keeps the rest i.i.d. uniform)."""
        pos = self._buf_pos
        if pos + b > self._buf.size:
            block = self.rng.bit_generator.random_raw(max(_BLOCK, b) // 2 + 1)
            self._buf = block.view(np.uint32).astype(np.int64)  # uniform on [0, 2^32)
            self._buf_max = int(self._buf.max())
            pos = 0
        raw = self._buf[pos:pos + b]
        self._buf_pos = pos + b
        slots = raw % k
        lim = (1 << 32) - (1 << 32) % k
        if self._buf_max >= lim:  # rare: reject the partial range, top up
            slots = slots[raw < lim]
            if slots.size < b:
                slots = np.concatenate([slots, self._draws(k, b - slots.size)])
        return slots

    def _counts(self, k: int, b: int) -> np.ndarray:
        """How often each of k slots is hit by b i.i.d. uniform draws (multinomial):
        counted from buffered draws when b is small against k, else one multinomial."""
        if b <= _COUNT_DRAWS_PER_SLOT * k:
            return np.bincount(self._draws(k, b), minlength=k)
        pvals = self._uniform.get(k)
        if pvals is None:
            if len(self._uniform) > 256:
                self._uniform.clear()
            pvals = self._uniform[k] = np.full(k, 1.0 / k)
        return self.rng.multinomial(b, pvals)

    def _round_by_draws(self, k: int, rem: int) -> int:
        """rem i.i.d. uniform draws over the k unmarked slots, applied in one batch.

        Slot s holds candidate ``nodes[s]``; it empties at its L-th draw. Then its
        parent, if that becomes an unmarked candidate, takes over the slot (the new
        candidate set has k members again, so later draws stay uniform over it);
        otherwise the slot is dead and its later draws are rejected (the others stay
        uniform over the k - 1 live slots). Only the per-slot counts and, for the slots
        hit at least their length ("full"), the relative order of their draws matter:
        the counts are multinomial; give every draw an i.i.d. uniform time (this makes
        the order of the draws uniformly random given the counts, as it is), then the
        L-th of a slot's c draws comes at ~Beta(L, c - L + 1), and a promoted parent's
        L'-th later draw at a Beta order statistic of the c - L later ones. Tree changes
        are applied after the batch, in event order. Returns the steps done: rem minus
        the rejected draws."""
        lens = self._lens[:k]
        counts = self._counts(k, rem)
        full = (counts >= lens).nonzero()[0]
        if not full.size:  # the common case: nobody empties
            self._take(counts, rem)
            return rem
        beta = self.rng.beta
        sizes = dict(zip(full.tolist(), counts[full].tolist(), strict=True))  # slot -> draws
        at: dict[int, int] = {}  # full slot -> index of the draw that empties its candidate
        events: list[tuple[float, int]] = []  # (time in (0, 1), slot) of those draws
        for s, c in sizes.items():
            length = int(lens[s])
            at[s] = length - 1
            events.append((beta(length, c - length + 1), s))  # the length-th of c uniforms
        heapq.heapify(events)
        owner = cast("list[Node | None]", self._nodes[:k])  # current candidate per slot
        since: dict[int, int] = {}  # promoted slot -> index of its candidate's first draw
        dead: dict[int, int] = {}  # dead slot -> index of its first rejected draw
        gone: list[tuple[Node, Node | None, int]] = []  # (emptied, promoted parent, slot)
        pending: dict[int, int] = {}  # id(parent) -> children emptied in this batch
        root, epoch, page, live = self.cache.root, self.epoch, self._page, k
        while events:
            e, s = heapq.heappop(events)
            node = owner[s]
            assert node is not None
            parent = node.parent
            assert parent is not None
            left = pending[id(parent)] = pending.get(id(parent), 0) + 1
            i = at[s]
            if (parent is not root and len(parent.children) == left and parent.lock_ref == 0
                    and parent.mark != epoch):  # the parent becomes a candidate in slot s
                owner[s] = parent
                since[s] = i + 1
                gone.append((node, parent, s))
                length, after = len(parent.key) // page, sizes[s] - i - 1
                if length <= after:  # it empties too: the length-th of the later draws
                    at[s] = i + length
                    heapq.heappush(events, (e + (1 - e) * beta(length, after - length + 1), s))
            else:
                owner[s] = None
                dead[s] = i + 1
                gone.append((node, None, s))
                live -= 1
                if not live:  # the phase is over: the rest of the batch is rejected
                    break
        steps = rem - sum(sizes[t] - i for t, i in dead.items())
        for _, _, s in gone:
            counts[s] = 0  # its first candidate is deleted below
        self._take(counts, steps)
        for node, parent, s in gone:
            self._delete(node, emit=True)  # adds the promoted parent to the store
            if parent is not None and owner[s] is parent:  # it survived the batch
                c = sizes[s] - since[s]
                if c:
                    self._trim(parent, c)
        return steps

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
        """Apply ``steps`` single-page evictions, ``counts`` per unmarked candidate."""
        k = counts.size
        cache, page = self.cache, self._page
        if cache.listening:  # events need the exact spans
            for pos in np.flatnonzero(counts).tolist():
                node = self._nodes[pos]
                keep = (int(self._lens[pos]) - int(counts[pos])) * page
                cache._emit("removed", cache.path_of(node)[: node.start + keep],
                            node.key[keep:])
        self._lens[:k] -= counts
        cache._discard(steps * page)

    def _trim(self, node: Node, c: int) -> None:
        """Take c pages off one candidate (already counted as discarded)."""
        pos = node.slot
        if self.cache.listening:
            cache = self.cache
            keep = (int(self._lens[pos]) - c) * self._page
            cache._emit("removed", cache.path_of(node)[: node.start + keep], node.key[keep:])
        self._lens[pos] -= c

    def _delete(self, node: Node, emit: bool = False) -> None:
        """Unlink a candidate whose length reached 0 (with ``emit``: its pages are still
        in the store and the removal event is sent here)."""
        if emit and self.cache.listening:
            self._trim(node, int(self._lens[node.slot]))
        self._lens[node.slot] = 1  # keep its first page to name the edge while unlinking
        self._remove(node)
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
