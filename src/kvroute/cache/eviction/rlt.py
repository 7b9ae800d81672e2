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
* Sampling is exact and vectorised, by whichever of two exact methods is cheaper for the
  round. (1) Direct draws: while no leaf empties the candidate set does not change, so
  the steps are i.i.d. uniform draws; draw a batch, use it up to the first draw that
  empties a leaf, discard the rest (independent of the past, so every step stays
  uniform over that moment's candidates). (2) Poissonisation, at no cost per token:
  give every candidate leaf an independent rate-1 Poisson clock; the merged arrivals
  are then i.i.d. uniform choices among the candidates, the same single-token steps
  as the algorithm. Leaf i empties at its L_i-th arrival, at time E_i ~ Gamma(L_i), so
  one round draws all E_i, takes the first leaf to empty (time T), and draws every other
  leaf's arrivals by T as Poisson(T) conditioned on being below its length. If that is
  more steps than the call still needs, the first ``rem`` steps are a uniformly random
  part of those arrivals (a multivariate hypergeometric draw) and no leaf empties. A
  round costs O(candidates) in numpy. Either way there is one round per deleted leaf
  plus one per call.
* Candidate lengths are trimmed lazily in the numpy array; the tree calls ``settle``
  before it reads a leaf's key, so beyond the numpy work a round costs O(1) Python,
  however many leaves it trims.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np

from kvroute.cache.eviction.base import EvictionPolicy
from kvroute.cache.eviction.registry import register
from kvroute.errors import IntegrityError

if TYPE_CHECKING:
    from kvroute.cache.radix import Node, RadixCache

__all__ = ["RLT"]

# A round draws tokens one by one (O(tokens)) when few are needed per candidate, and runs
# the Poisson clocks (O(candidates), a Gamma draw each) otherwise: both are exact.
_DRAWS_PER_CANDIDATE = 4

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
        self._lens = np.zeros(1024)  # pages (float64: Gamma shapes), authoritative
        self._u = 0

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
            self._lens = np.concatenate([self._lens, np.zeros(size)])
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
            lens = self._lens[:k]
            if rem <= _DRAWS_PER_CANDIDATE * k:
                steps, emptied = self._round_by_draws(lens, rem)
            else:
                steps, emptied = self._round_by_clocks(lens, rem)
            done += steps
            if emptied is not None:
                self._delete(emptied)
        return done * page

    def _round_by_draws(self, lens: np.ndarray, rem: int) -> tuple[int, Node | None]:
        """Up to rem uniform draws at once; stop at the first draw that empties a leaf
        (later draws are discarded: they are independent of everything before)."""
        k = lens.size
        draws = self.rng.integers(0, k, size=rem)
        counts = np.bincount(draws, minlength=k)
        full = counts >= lens
        if not full.any():
            self._take(counts, rem)
            return rem, None
        at = np.flatnonzero(full[draws])  # draws on leaves that empty within the batch
        sub = draws[at]
        order = np.argsort(sub, kind="stable")
        ranked = sub[order]
        rank = np.arange(ranked.size) - np.searchsorted(ranked, ranked) + 1
        t = int(at[order[rank == lens[ranked]]].min())  # the first emptying draw
        self._take(np.bincount(draws[: t + 1], minlength=k), t + 1)
        return t + 1, self._nodes[int(draws[t])]

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

    def _delete(self, node: Node) -> None:
        """Unlink a candidate whose length reached 0."""
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
