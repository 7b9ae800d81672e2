"""How :mod:`~kvroute.cache.eviction.rlt` draws an eviction call's steps: its samplers.

Not a policy module: RLT picks one sampler by name, ``RLT(seed, sampler="batches")``
(``make_policy("rlt", seed=1, sampler="clocks")``). Every sampler is exact, so they
differ in speed only, and all draw from the policy's own seeded generator:

==============  ==========================================================================
``batches``     the default: batches of draws, counts by counting draws or a multinomial,
                whichever is cheaper at the size; each slot's chain followed on its own
``counted``     batches, counts always by counting draws
``multinomial`` batches, counts always from a multinomial
``timed``       batches with multinomial counts; every emptying event ordered in time
``clocks``      Poisson clocks (slower at every tree size measured; tests force it)
==============  ==========================================================================

The functions here only draw and decide; the policy owns the candidate store and
applies the outcome to it and to the tree.

(1) Batches: a call's rem steps are rem i.i.d. uniform draws over k *slots*, one per
unmarked candidate. When a slot's leaf has had L draws it empties; its parent, if that
becomes an unmarked candidate, takes over the slot (k candidates again, so later draws
stay uniform over them), else the slot is dead and its later draws are rejected (the
others stay uniform over the k - 1 live ones); a new batch makes up for rejected draws.
What matters is each slot's count, a multinomial (:class:`SlotCounts`): one numpy draw,
or, with at least 16 slots and at most 32 draws per slot (where numpy's binomials invert
and cost in proportion to the draws), a bincount of buffered 32-bit draws x, slot
x // (2^32 // k), the values past the last multiple of k landing in an extra bin and
drawn again. The policy takes the counts off the lengths in place and one ``argmin``
tells whether any slot was drawn at least its length ("full"). A batch where nobody
empties (about three in four on the GSP stream) costs the counts, that subtraction and
the ``argmin``.

Full slots (:func:`follow_slots`): each slot's chain (leaf, promoted parent, its
parent...) is followed on its own, which is exact because the order of events in
different slots matters only through a parent with two or more children that all empty
in the batch: the last of them to empty promotes it into its slot, the others' slots
die. Such a parent makes its children's chains wait; when its last child has emptied,
their times decide: give every draw an i.i.d. uniform time (this makes the order of the
draws uniformly random given the counts, as it is); a slot's L-th of c draws comes at
~Beta(L, c - L + 1) and a promoted parent's L'-th later draw at a Beta order statistic
of the rest. These Betas are drawn lazily, only for such parents (:func:`in_time_order`,
which orders every event in time with a heap, is kept as an independent method).

(2) Poissonisation (:func:`clock_round`): give every candidate leaf an independent
rate-1 Poisson clock; the merged arrivals are then i.i.d. uniform choices among the
candidates, the same single-token steps as the algorithm. Leaf i empties at its L_i-th
arrival, at time E_i ~ Gamma(L_i), so one round draws all E_i, takes the first leaf to
empty (time T), and draws every other leaf's arrivals by T as Poisson(T) conditioned on
being below its length. If that is more steps than the call still needs, the first
``rem`` steps are a uniformly random part of those arrivals (a multivariate
hypergeometric draw) and no leaf empties. A round costs O(candidates) in numpy; there is
one round per deleted leaf plus one per call.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple, cast

import numpy as np

from kvroute.errors import ConfigError

if TYPE_CHECKING:
    from kvroute.cache.radix import Node

__all__ = ["SAMPLERS", "Batch", "Sampler", "SlotCounts", "clock_round", "follow_slots",
           "in_time_order", "sampler_named"]


@dataclass(frozen=True, slots=True)
class Sampler:
    """How RLT samples a call: which counts, which resolution, batches or clocks."""

    name: str
    #: a call that needs more steps than this per unmarked candidate runs on Poisson
    #: clocks, else by batches (both exact; batches measured faster at every tree size)
    draws_per_candidate: float
    #: a batch's per-slot counts come from counting single draws when there are at least
    #: ``count_min_slots`` slots and at most this many draws per slot, else from one
    #: multinomial draw. Measured: numpy's multinomial costs about 1 us plus, per slot,
    #: 0.05 us at 4 draws, 0.2 us at 24 (its binomials invert below 30) and 0.1 us from
    #: 32 on; counting costs about 2 us plus 3 ns a draw. So few slots take the multinomial
    count_draws_per_slot: float
    count_min_slots: int
    #: batches in which leaves empty follow each slot's chain on its own and order events
    #: in time only where the order matters; False orders every event in time
    follow_slots: bool


_INF = float("inf")
SAMPLERS: dict[str, Sampler] = {s.name: s for s in (
    Sampler("batches", _INF, 32, 16, True),
    Sampler("counted", _INF, _INF, 0, True),
    Sampler("multinomial", _INF, 0, 0, True),
    Sampler("timed", _INF, 0, 0, False),
    Sampler("clocks", 0, 32, 16, True),
)}


def sampler_named(name: str) -> Sampler:
    """The sampler called ``name``; ConfigError listing the choices otherwise."""
    try:
        return SAMPLERS[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown rlt sampler {name!r}; choose one of: "
                          f"{', '.join(SAMPLERS)}") from None


_BLOCK = 1 << 16  # uniform draws fetched from the generator at a time


class SlotCounts:
    """How often each of k slots is hit by b i.i.d. uniform draws, from ``rng``."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self._buf = np.zeros(0, dtype=np.uint32)  # pre-drawn 32-bit integers
        self._buf_pos = 0
        self._uniform: dict[int, np.ndarray] = {}  # k -> [1/k] * k
        self._divisor: dict[int, np.uint32] = {}  # k -> 2^32 // k (a numpy scalar divides faster)

    def multinomial(self, k: int, b: int) -> np.ndarray:
        """One multinomial draw (its probabilities cached per k)."""
        pvals = self._uniform.get(k)
        if pvals is None:
            if len(self._uniform) > 256:
                self._uniform.clear()
            pvals = self._uniform[k] = np.full(k, 1.0 / k)
        return self.rng.multinomial(b, pvals)

    def counted(self, k: int, b: int) -> np.ndarray:
        """Counted from a buffer of 32-bit integers drawn in blocks from the seeded
        generator's bit stream: x goes to slot x // m with m = 2^32 // k (the division by
        a constant is much cheaper than a remainder). Exact: values at or past k * m,
        which land in an extra bin k, are rejected and drawn again (this keeps the rest
        i.i.d. uniform)."""
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
            counts = counts[:k] + self.counted(k, counts.item(k))
        return counts


class Batch(NamedTuple):
    """A resolved batch, for the policy to apply: the emptied nodes (children before
    their parents), the slots left without a candidate, each promoted parent that
    survives with its slot and pages left, the parents of nodes whose slot died (maybe
    candidates now), and the steps done (the draws minus the rejected ones)."""

    gone: list[Node]
    dead: list[int]
    kept: list[tuple[int, Node, int]]
    orphans: list[Node]
    steps: int


class _Emptying:
    """The draw that empties a node: its time in (0, 1) is drawn once, when first asked
    for, ~Beta(a, b) on what is left of (0, 1) after the slot's previous such draw."""

    __slots__ = ("a", "b", "prev", "time")

    def __init__(self, prev: _Emptying | None, a: int, b: int) -> None:
        self.time = -1.0
        self.prev = prev
        self.a = a
        self.b = b


def _event_time(event: _Emptying, rng: np.random.Generator) -> float:
    if event.time < 0:
        prev = event.prev
        start = 0.0 if prev is None else _event_time(prev, rng)
        event.time = start + (1.0 - start) * rng.beta(event.a, event.b)
    return event.time


# a chain of emptying draws in one slot: (the slot, its draws, index of the draw that
# empties the node, the node, that draw)
_Chain = tuple[int, int, int, "Node", _Emptying]


def follow_slots(nodes: list[Node], rem: int, counts: np.ndarray, lens: np.ndarray,
                 full: list[int], root: Node, epoch: int, page: int,
                 rng: np.random.Generator) -> Batch:
    """A batch in which some slots were drawn at least their length ("full"; ``lens``
    is already reduced by ``counts``, so theirs are <= 0). Slot s holds candidate
    ``nodes[s]``; it empties at its L-th draw. Then its parent, if that becomes an
    unmarked candidate, takes over the slot (the candidate set has k members again,
    so later draws stay uniform over it) and empties in turn at its L'-th later draw;
    otherwise the slot is dead and its later draws are rejected (the others stay
    uniform over the live slots).

    The order of events in different slots matters only through a parent with two or
    more children that all empty in the batch: the last of them to empty promotes it
    into its own slot (the others' slots die). So each slot's chain is followed on
    its own; a chain that reaches such a parent waits there, and when the parent's
    last child has emptied, the times of its children's emptying draws decide which
    slot takes it. Event times are drawn only then, lazily, as in ``in_time_order``:
    the L-th of a slot's c draws comes at ~Beta(L, c - L + 1), and a promoted
    parent's L'-th later draw at a Beta order statistic of the later ones."""
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
        work.append((s, c, length - 1, node, _Emptying(None, length, c - length + 1)))
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
                times = [_event_time(g[4], rng) for g in group]
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
                event = _Emptying(event, length, after - length + 1)
                continue
            kept.append((s, parent, length - after))
            break
    for group in waiting.values():  # parents that keep a child: those slots die
        for s, c, i, _, _ in group:
            dead.append(s)
            rejected += c - i - 1
    return Batch(gone, dead, kept, orphans, rem - rejected)


def in_time_order(nodes: list[Node], rem: int, counts: np.ndarray, lens: np.ndarray,
                  full: list[int], root: Node, epoch: int, page: int,
                  rng: np.random.Generator) -> Batch:
    """``follow_slots`` with the events in time order: give every draw an i.i.d.
    uniform time (this makes the order of the draws uniformly random given the counts,
    as it is); the L-th of a slot's c draws comes at ~Beta(L, c - L + 1), and a promoted
    parent's L'-th later draw at a Beta order statistic of the c - L later ones."""
    beta = rng.beta
    cs = counts[full]
    lengths = lens[full] + cs
    times = beta(lengths, cs - lengths + 1).tolist()  # each slot's L-th of c uniforms
    sizes = dict(zip(full, cs.tolist(), strict=True))  # slot -> draws
    at = {s: length - 1 for s, length in zip(full, lengths.tolist(), strict=True)}
    events = list(zip(times, full, strict=True))  # (time in (0, 1), slot)
    heapq.heapify(events)
    owner = cast("list[Node | None]", nodes[: counts.size])  # current candidate per slot
    since: dict[int, int] = {}  # promoted slot -> index of its candidate's first draw
    gone: list[Node] = []
    orphans: list[Node] = []
    pending: dict[int, int] = {}  # id(parent) -> children emptied in this batch
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
    return Batch(gone, dead, kept, orphans, rem - rejected)


def clock_round(rng: np.random.Generator, lens: np.ndarray,
                rem: int) -> tuple[np.ndarray, int, int]:
    """One Poissonisation round over candidates of ``lens`` pages: leaf i empties at its
    lens[i]-th arrival, at ~Gamma(lens[i]). Returns the pages to take off each, the steps
    that makes (at most ``rem``), and the slot of the leaf that empties (-1 if none: the
    call ends first, and its steps are the first ``rem`` arrivals)."""
    empties = rng.standard_gamma(lens)
    first = int(empties.argmin())
    counts = _counts_before(rng, float(empties[first]), lens, first)
    counts[first] = int(lens[first])
    steps = int(counts.sum())
    if steps > rem:  # the call ends before the leaf empties: the first rem arrivals
        counts[first] -= 1
        return rng.multivariate_hypergeometric(counts, rem), rem, -1
    return counts, steps, first


def _counts_before(rng: np.random.Generator, t: float, lens: np.ndarray,
                   first: int) -> np.ndarray:
    """Arrivals by time t of every other leaf: Poisson(t) given fewer than its length."""
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
