"""``learned``: eviction by predicted reuse, learned online from ghosts, with RLT's
marking phases as a fallback that keeps a worst-case guarantee.

What it sees (no future knowledge): for every leaf, how many matches passed through it
(``hits``: the requests that reused it), when and in which phase it was last accessed,
whether it hangs from the root or below a cached prefix, its length when it was created
and how much of its head was *proven* (asked for again through a ghost, below). Its
*class* has four parts: the hit bucket ``min(6, bit_length(hits))`` (0, 1, 2-3, 4-7,
8-15, 16-31, 32+; a leaf that is all proven head counts one hit more); below the root
or not (``start > 0``); deep half or shallow half (its length is more than half of its
length when created, or not); and its age in phases since its last access (0, 1, 2-3,
4-7, 8+). 7 x 2 x 2 x 5 = 140 classes.

Phases (as in marking paging and RLT): a phase is a maximal run of accesses that touch
at most ``capacity`` distinct tokens. Every token a ``match`` or ``insert`` touches is
*marked* with the current phase; a phase ends when the marked tokens would exceed the
capacity, or (in the fallback below) when space is needed and no unmarked leaf is left;
a phase that begins so, within an eviction call, finishes that call by RLT's rule and
follows its own (predictions, unless it is an RLT-only phase) from the next call.

What it learns: when it evicts a span (the last pages of a leaf) it leaves a *ghost*
(:mod:`~kvroute.cache.eviction.reuse_model`: the span's ids, class, phase, where it
hung; successive trims of one leaf merge into one ghost). If a later request asks for
the span again, it creates a new leaf in the same place: a ghost hit; the span's
classes are credited with the ids the new leaf shares with it, the new leaf gets the
evicted leaf's hits back, and that shared head is proven. Per class, the reuse
probability is ``(reused + w q) / (evicted + w)``, counted when ghosts are settled
(asked for, or forgotten), with q the rate of its hit-bucket group and w one page; the
counts halve after every ``capacity`` settled tokens; the ghost list holds ``ghosts``
x ``capacity`` tokens.

Echoes (longer popularity memory): a ghost that falls off the list is settled (the
model's horizon stays one list) but stays as an *echo* for ``memory`` x ``capacity``
more tokens: its place, length and hits count, and its ids are only checked, at the ids
ending its prefixes of 2, 4, 8, ... pages (read when it is recalled, not when it is
made). A new leaf in an echo's place that agrees with it at those ids gets the hits
back and the longest agreeing prefix as its proven head, as a ghost hit would (a
sampled check: a false agreement only misjudges popularity). On the Mooncake trace
(benchmarks/mooncake_reuse.py) the reuse that matters comes hundreds of requests later,
far past a ghost list of one capacity at 1%; the echoes are what lifted ``learned``
there from below lru/rlt to about their level (0.99-1.08x on the design and check
seeds, docs/eviction-results.md).

How it evicts (prediction mode): among all unlocked leaves, the one whose class has the
least estimated reuse probability (least expected saving per token: every token of a
class has its class's probability), oldest last access first within a class; from it,
the last pages as needed, but at most down to its proven head, or (if it has none) down
to half its created length, so a deep half goes before a shallow one. It frees exactly
what is asked (rounded up to a page).

The guarantee (robustness). Predictions are trusted per phase. A prediction *mistake*
is a ghost hit on a span that prediction evicted in the same phase. RLT's own phases make
such returns too (their evictions of unmarked spans that the phase then asks for), so
mistakes are measured against them: as soon as the tokens of the phase's mistakes exceed
``trust * capacity`` plus what an RLT-only phase has had return by the same point of
the phase (its same-phase returns, on average over the finished RLT-only phases, times
the share of the capacity this phase has touched so far; nothing before any has
finished), the rest of the phase is run by RLT's
rule: each step evicts one page from a leaf drawn uniformly among the unmarked unlocked
leaves (RLT's process, drawn in batches: counts over the k unmarked leaves by one
multinomial, a leaf drawn more than its length empties and the excess is drawn again;
a parent that becomes a candidate during a batch joins at the next batch), and a phase
ends when no unmarked leaf is left. A phase that fell back is followed by 1, then 3,
7, ... (doubling after each consecutive failure) phases of RLT's rule alone before
predictions are tried again; a phase that keeps its trust resets the count. Hence:

* each phase in prediction mode pays at most ``trust * capacity`` tokens of misses for
  its own mistakes, beyond what RLT's phases pay by the same count, before it becomes
  an RLT phase (plus the misses of spans predicted away before the switch that come
  back later in the phase);
* on a stream where predictions always fail, at most about log2(P) + 2 of P phases
  use predictions, and all the others are RLT phases (O(log k)-competitive rule);
* tested (tests/cache/test_learned.py): on the adversarial cycle (k + 1 disjoint paths
  through a cache of k, where leaf-LRU never hits) its hit rate is at least 0.9x RLT's,
  with its own predictions and with predictions that are always wrong.

Why the yardstick (it was a flat ``trust * capacity``): where the working set is larger
than the cache every policy evicts spans that come back within the phase, and a flat
budget handed predictions' phases to RLT's rule where it loses (docs/cache.md).

This is a measured guarantee with a stated mechanism, not a proof of a competitive
ratio: the RLT phases start from the state the predictions left.

Recency check (``shadow``): the classes do not carry the fine recency that plain LRU
uses, and on session traffic (each turn extends the last; docs/cache.md) prediction kept
ended sessions' paths and lost about 1% of the hits to lru, too little for the yardstick
above to notice. So a :class:`~.recency_shadow.RecencyShadow` replays every stored
sequence through a block-LRU tree of the same capacity (vLLM's LRU: pages from the
oldest leaf's end) and compares hits phase by phase (decayed sums; a lead starts beyond
the per-request noise and lasts until ``learned`` is as far ahead). In a phase after one
where the shadow led, a prediction step first takes the candidate leaf accessed least
recently (LRU's next victim) and trims the part of its end the shadow no longer holds:
what LRU has already dropped goes first, oldest first, so the contents move toward LRU's
(a switch of rule would not inherit LRU's contents, and lands below both where they are
close). If the shadow holds all of that leaf, the step is prediction's. Prediction's
order and the fallback stand as above; the hand-over only chooses some predicted victims
by age instead, so the guarantee's mechanism is unchanged (its trims count as
predicted). The rule it replaced (a scan of prediction's next 32 leaves), and what each
costs where lru leads for a few phases only, are in docs/cache.md, "`learned` on long
streams".

Parameters: ``seed`` (its own numpy generator, for the fallback's draws); ``trust``
(0.1: the share of the capacity that mistakes may cost in a phase, beyond RLT's
phases' same-phase returns, before the phase falls back; 0 falls back at the first
mistake beyond them); ``ghosts`` (1.0: the ghost list's size
in capacities, as ARC's); ``memory`` (2.0: the echoes' size in capacities; 0 keeps
none); ``shadow`` (True: the recency check above; False: none, and none of its cost).

Cost: O(log L) per heap change; a victim in prediction mode is the least of the class
groups' cached top keys (``group_heaps.GroupHeaps``: one lazy min-heap per group keyed
by last access; a group's key is recomputed only when it may have changed, and
tests/cache/test_learned.py checks the choice against a full scan). The fallback gathers
the unmarked leaves once per batch, in the order of their heap entries (so its seeded
draws do not depend on the heaps' layout; sorted once per phase, then O(those not yet
seen marked in the phase), pruned as they are read), and visits only the leaves drawn. A
ghost hit compares the new leaf with the span cut by cut, each on its first 16 pages
first (most share a page or two), so the span is never joined and a long one is not
read.

Replay time (issue 13: within 2x of rlt's): every victim is one Python step (the lookup
above, a ghost, the ghosts it pushes out, the tree's trim, a heap entry; about 4 us),
against rlt's numpy batches that draw a whole call's steps at once; the recency check
adds the shadow's walks (paused while it is far behind, as on GSP, but for its probe
phases), its tree's memory (up to the capacity in ids) and, in hand-over phases, a path
read per leaf looked at. ``benchmarks/cache_bench.py`` (GSP, 1-token pages) puts it at
about 2x rlt's (1.9-2.2x from run to run on this shared machine: the noise decides the
verdict); on the Mooncake trace in blocks, where the shadow leads in most phases, 2.2x /
3x / 3x at 1% / 5% / 10% (not met). The measurements over time, and where the time goes:
docs/cache.md, "Replay time".
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

from kvroute.cache.eviction.group_heaps import GroupHeaps, valid
from kvroute.cache.eviction.leaf_classes import AGES, GROUPS, age_bucket, group, new_aux
from kvroute.cache.eviction.policy import EvictionPolicy
from kvroute.cache.eviction.recency_shadow import RecencyShadow
from kvroute.cache.eviction.registry import register
from kvroute.cache.eviction.reuse_model import Ghost, GhostList, ReuseModel
from kvroute.errors import IntegrityError
from kvroute.params import number

if TYPE_CHECKING:
    from kvroute.cache.radix import Node, RadixCache

__all__ = ["LearnedEviction"]


@register
class LearnedEviction(EvictionPolicy):
    name = "learned"
    takes_seed = True

    def __init__(self, seed: int | None = None, trust: float = 0.1, ghosts: float = 1.0,
                 memory: float = 2.0, shadow: bool = True) -> None:
        self.trust = number("learned", "trust", trust, low=0.0)
        self._ghost_share = number("learned", "ghosts", ghosts, low=0.0, low_open=True)
        self._memory_share = number("learned", "memory", memory, low=0.0)
        self.rng = np.random.default_rng(seed)
        self.epoch = 1  # node.mark == epoch <=> touched in this phase
        self.phases = 1
        self.phase_tokens = 0  # distinct tokens touched in this phase
        self.predicting = True  # this phase follows predictions
        self.tried = True  # this phase started with predictions
        self.failed = False  # this phase fell back
        self.streak = 0  # consecutive failed prediction phases
        self.skip = 0  # RLT-only phases left before predictions are tried again
        self.rlt_phases = 0
        self.mistakes = 0  # tokens, this phase
        # the yardstick of mistakes: in the RLT-only phases, the tokens RLT's rule evicted
        # that were asked for again in the same phase (this phase's, and the sum and
        # count over the finished ones)
        self.returns = 0
        self.rlt_returns = 0
        self.rlt_done = 0
        self._deferred = False  # a phase that began within a call predicts from the next
        self.candidates = GroupHeaps(GROUPS)
        self._halvings = 0
        self._shadowing = bool(shadow)
        self.shadow: RecencyShadow | None = None  # made in attach
        self.handover = False  # this phase evicts first what the shadow dropped
        self.handover_phases = 0

    def attach(self, cache: RadixCache) -> None:
        super().attach(cache)
        self._page = cache.page_size
        self.model = ReuseModel(GROUPS, AGES, cache.capacity, weight=cache.page_size)
        # what every victim's lookup reads, bound once (the estimates list is updated in place)
        self._estimates, self._p = self.model.estimates, self.model.p
        self._child_key = cache.child_key
        self.ghosts = GhostList(int(self._ghost_share * cache.capacity),
                                int(self._memory_share * cache.capacity), cache.page_size)
        if self._shadowing:
            self.shadow = RecencyShadow(cache.capacity, cache.page_size)

    # ---------------------------------------------------------------- phases
    def _touch(self, node: Node) -> None:
        if node.mark != self.epoch:
            node.mark = self.epoch
            self.phase_tokens += len(node.key)
            if self.phase_tokens > self.cache.capacity:
                self._new_phase()
                node.mark = self.epoch
                self.phase_tokens = len(node.key)

    def _changed(self, groups: Iterable[int]) -> None:
        """The model's estimates changed for ``groups`` (for all, if it halved)."""
        self.candidates.changed(groups)
        if self.model.halvings != self._halvings:
            self._halvings = self.model.halvings
            self.candidates.forget_all()

    def _new_phase(self) -> None:
        self.candidates.new_phase()  # ages moved, marks reset
        self.handover = self.shadow is not None and self.shadow.phase_end()
        self.handover_phases += self.handover
        if self.tried:  # this phase started with predictions
            if self.failed:
                self.streak += 1
                self.skip = 2 ** self.streak - 1
            else:
                self.streak = 0
        self.epoch += 1
        self.phases += 1
        self.phase_tokens = 0
        if not self.tried:  # an RLT-only phase ends
            self.rlt_returns += self.returns
            self.rlt_done += 1
        self.returns = 0
        self.mistakes = 0
        self.failed = False
        self.predicting = self.tried = self.skip == 0
        if not self.predicting:
            self.skip -= 1
            self.rlt_phases += 1

    # ---------------------------------------------------------------- hooks
    def on_stored(self, tokens: np.ndarray, cached: int) -> None:
        if self.shadow is not None:
            self.shadow.record(tokens, cached, self.cache.now)

    def on_created(self, leaf: Node) -> None:
        ids = leaf.key
        aux = leaf.aux = new_aux(0, len(ids))
        parent = leaf.parent
        assert parent is not None
        key = (id(parent), self.cache.child_key(ids, 0))
        ghosts = self.ghosts
        ghost = ghosts.take(key, parent)
        if ghost is None:
            echo = ghosts.recall(key, parent, ids) if ghosts.echo_tokens else None
            if echo is not None and echo[1]:  # asked for again after its span was forgotten
                aux[0] = echo[0]
                aux[2] = echo[1]
        else:
            shared = self._shared(ghost, ids)
            self._credit(ghost, shared)
            if shared:  # asked for again: its popularity comes back, its head is proven
                aux[0] = ghost.hits
                aux[2] = shared
        self._touch(leaf)
        if leaf.lock_ref == 0:
            self.candidates.push(leaf)

    def _shared(self, ghost: Ghost, ids: np.ndarray) -> int:
        """``cache.common_length(ghost.span, ids, 0)``, cut by cut (shallow first), each
        first compared on its first 16 pages: the span is never joined, and most ghost
        hits share only a page or two, so the rest of a long cut (evicted long ago, no
        longer in the CPU's caches) is not read."""
        common_length = self.cache.common_length
        probe = 16 * self._page
        shared, n = 0, len(ids)
        for seg in reversed(ghost.segments):
            key, start = seg[4], seg[5]
            length = len(key) - start
            m = common_length(key[start:start + probe], ids, shared)
            if m == probe < length and shared + m < n:  # the probe agrees: the rest
                m += common_length(key[start + probe:], ids, shared + probe)
            shared += m
            if m < length or shared >= n:
                break
        return shared

    def _credit(self, ghost: Ghost, shared: int) -> None:
        """A request asked again for the first ``shared`` ids of an evicted span."""
        model = self.model
        groups = []
        for seg in reversed(ghost.segments):  # shallow first
            tokens = seg[1]
            hit = max(0, min(shared, tokens))
            shared -= hit
            groups.append(model.resolve(seg[0], tokens, hit))
            if hit and seg[2] == self.epoch:
                if not self.tried:
                    self.returns += hit
                elif seg[3] and self.predicting:  # predicted
                    self.mistakes += hit
                    if self.mistakes > self._allowed():
                        self.predicting = False
                        self.failed = True
        self._changed(groups)

    def _allowed(self) -> float:
        """The mistakes a phase's predictions may make: ``trust * capacity`` more than
        an RLT-only phase makes by the same count (its evictions asked for again in the
        phase), on average over the finished ones (0 before any)."""
        capacity = self.cache.capacity
        allowed = self.trust * capacity
        if self.rlt_done:
            allowed += self.rlt_returns / self.rlt_done * self.phase_tokens / capacity
        return allowed

    def on_access(self, node: Node, hit: bool) -> None:
        if node.mark != self.epoch:
            self._touch(node)
        if hit:
            node.aux[0] += 1
        if not node.children and node.lock_ref == 0:
            self.candidates.push(node)

    def on_split(self, prefix: Node, suffix: Node, in_match: bool) -> None:
        prefix.mark = suffix.mark
        proven, full, cut = suffix.aux[2], suffix.aux[3], len(prefix.key)
        prefix.aux = new_aux(suffix.aux[0], cut, min(proven, cut))
        suffix.aux[2] = max(0, proven - cut)
        suffix.aux[3] = max(len(suffix.key), full - cut)
        if suffix.slot > 0 and valid(suffix):  # its start moved: maybe a new group
            self.candidates.push(suffix)

    def on_candidacy(self, node: Node) -> None:
        if valid(node):
            self.candidates.push(node)
        elif node.slot > 0:
            self.candidates.stale(node)

    def on_removed(self, node: Node) -> None:
        if node.slot > 0:  # a victim was popped already (slot -1): nothing to do
            self.candidates.stale(node)

    # ---------------------------------------------------------------- eviction
    def evict(self, n: int) -> int:
        page = self._page
        need = -(-n // page)
        done = 0
        predicted, tail, trim = self._predicted, self._tail, self._trim
        held: dict[int, Node] = {}  # leaves a hand-over scan found the shadow holds
        while done < need:
            if self.handover and self.predicting:
                taken = self._handover(need - done, held)
                if taken:
                    done += taken
                    continue
            if self.predicting:
                node = predicted()
                if node is None:
                    break
                take = tail(node) // page or 1  # at least one page, at most what is left
                if take > need - done:
                    take = need - done
                trim(node, take, True)  # predicted
                done += take
            else:
                steps = self._rlt_batch(need - done)
                if steps < 0:
                    break
                done += steps
        if self._deferred:  # a phase began in this call: its own rule from the next one
            self._deferred = False
            self.predicting = self.tried
        return done * page

    def _handover(self, pages: int, held: dict[int, Node]) -> int:
        """The candidate leaf accessed least recently (LRU's next victim) loses the
        part of its end the shadow no longer holds, up to ``pages``: the pages trimmed; 0
        if the shadow holds all of it (it stays where it is, and the step is
        prediction's).

        ``held`` (by ``id``) lists the leaves found held earlier in the same eviction
        call, which are not read again: neither the shadow nor a leaf's path changes
        during a call, but for trims, which only shorten a held path."""
        assert self.shadow is not None
        candidates, estimates, p, epoch = self.candidates, self._estimates, self._p, self.epoch
        node = candidates.peek_least(estimates, p, epoch, oldest=True)
        if node is None or id(node) in held:
            return 0
        path = self.cache.path_of(node)
        gone = (len(path) - max(self.shadow.holds(path), node.start)) // self._page
        if gone <= 0:
            held[id(node)] = node
            return 0
        candidates.pop_least(estimates, p, epoch, oldest=True)  # node: nothing moved since
        taken = min(gone, pages)
        self._trim(node, taken, True)  # predicted: its mistakes count as such
        return taken

    def _predicted(self) -> Node | None:
        """Pop the leaf of least estimated reuse (oldest first within a class)."""
        return self.candidates.pop_least(self._estimates, self._p, self.epoch)

    @staticmethod
    def _tail(node: Node) -> int:
        """What prediction takes from a leaf at once: down to its proven head, else
        down to half its length when created (one page at least), else all of it."""
        length = len(node.key)
        proven: int = node.aux[2]
        full: int = node.aux[3]
        if length > proven > 0:
            return length - proven
        half = -(-full // 2)
        return max(length - half, 1) if 2 * length > full else length

    def _trim(self, node: Node, pages: int, predicted: bool) -> None:
        """Evict the last ``pages`` pages of a candidate leaf, leaving a ghost (merged
        with the ghost of the leaf's earlier trims, which hangs right after it)."""
        page = self._page
        tokens = pages * page
        ids, aux, epoch = node.key, node.aux, self.epoch
        keep = len(ids) - tokens
        # its class: a candidate's group is its live entry's (aux[4], as check() verifies)
        seg = (aux[4] * AGES + age_bucket(epoch - node.mark), tokens, epoch, predicted, ids,
               keep)
        tail = aux[1]
        aux[1] = None
        anchor = node if keep > 0 else node.parent
        key = (id(anchor), self._child_key(ids, keep))
        gone = self.ghosts.add_trim(tail, node, key, anchor, seg, aux[0])
        if gone:
            self._changed(self.model.forgotten(gone))
        self.cache.trim_leaf(node, tokens)
        if keep > 0:
            aux[1] = key
            self.candidates.push(node)  # still a candidate, shorter

    def _rlt_batch(self, rem: int) -> int:
        """One batch of RLT's process: ``rem`` uniform draws over the unmarked leaves
        (a new phase if there are none); returns pages freed, -1 if nothing is left."""
        leaves = self.candidates.unmarked(self.epoch)
        if not leaves:
            if not self.candidates.any_live():
                return -1  # everything left is locked
            self._new_phase()
            if self.predicting:  # finish this eviction call by RLT's rule; the phase's
                self.predicting = False  # predictions start with the next call
                self._deferred = True
            return 0
        counts = self.rng.multinomial(rem, np.full(len(leaves), 1.0 / len(leaves)))
        drawn = counts.tolist()
        done = 0
        page = self._page
        for i in np.flatnonzero(counts).tolist():  # the leaves drawn, in their order
            node = leaves[i]
            take = min(drawn[i], len(node.key) // page)
            self._trim(node, take, False)  # not predicted
            done += take
        return done

    def check(self) -> None:
        live = {}
        for b, key, node in self.candidates.live():
            if key != node.last_access or b != group(node):
                raise IntegrityError(f"learned: stale heap entry for {node}")
            live[id(node)] = node
        for node in self.cache.nodes():
            if valid(node) and id(node) not in live:
                raise IntegrityError(f"learned: candidate leaf {node} missing from its heap")
            if node.mark > self.epoch:
                raise IntegrityError(f"learned: {node} marked in a future phase")
        heaps = self.candidates
        if any(key is None and b not in heaps.dirty for b, key in heaps.best.items()):
            raise IntegrityError("learned: a stale group key is not listed for a refresh")
        if min(self.phase_tokens, self.mistakes, self.returns, self.rlt_returns) < 0:
            raise IntegrityError("learned: negative phase counters")
        if self.shadow is not None:
            self.shadow.tree.check_integrity()
