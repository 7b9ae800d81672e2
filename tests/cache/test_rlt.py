"""RLT: marks, locks, exact deficits, phases, and the distribution of its choices."""

from collections import Counter

import numpy as np
import pytest
from scipy import stats

from kvroute.cache import RadixCache, make_policy, replay
from kvroute.cache.eviction.rlt_samplers import SAMPLERS, SlotCounts
from kvroute.errors import ConfigError

LEAVES = ([1, 1, 1], [2, 2], [3], [4, 4, 4, 4], [5, 5])


def fresh_phase_cache(seed, leaves=LEAVES):
    """Leaves under the root, all unmarked (a new phase has just begun)."""
    c = RadixCache(100, make_policy("rlt", seed=seed))
    for seq in leaves:
        c.insert(seq)
    c.policy._new_phase()
    return c


def test_marked_and_locked_tokens_survive_within_a_phase():
    """Within a phase only unmarked, unlocked leaf tokens are evicted."""
    for seed in range(50):
        c = fresh_phase_cache(seed)
        c.match([1, 1, 1])  # marks [1,1,1]
        c.lock(c.match([2, 2]).handle)  # marks and locks [2,2]
        assert c.evict(3) == 3
        assert c.match([1, 1, 1]).hit == 3 and c.match([2, 2]).hit == 2
        c.check_integrity()


def test_evicts_exactly_the_deficit_and_ends_a_phase_only_when_needed():
    """It frees exactly n; with every candidate marked, a new phase starts."""
    c = RadixCache(100, make_policy("rlt", seed=3))
    for seq in LEAVES:
        c.insert(seq)  # inserted tokens are marked: no candidate in this phase
    phases = c.policy.phases
    assert c.evict(4) == 4 and c.policy.phases == phases + 1
    assert c.total == 12 - 4
    assert c.evict(100) == 8 and c.total == 0
    c.check_integrity()


def test_parent_becomes_candidate_when_last_child_drains():
    """A drained child is deleted and its unmarked parent is next in line."""
    c = RadixCache(100, make_policy("rlt", seed=0))
    c.insert([7, 7, 8])
    c.policy._new_phase()
    assert c.evict(2) == 2  # the only candidate is [8] then [7,7]'s last token
    assert [s.tolist() for s in c.cached_sequences()] == [[7]]
    c.check_integrity()


def test_single_token_victims_are_uniform_over_candidate_leaves():
    """Chi-square: a one-token eviction picks each candidate leaf equally often,
    not weighted by its length (lengths 1..4 here)."""
    counts = Counter()
    trials = 3000
    for seed in range(trials):
        c = fresh_phase_cache(seed)
        before = {tuple(s) for s in c.cached_sequences()}
        c.evict(1)
        after = {tuple(s) for s in c.cached_sequences()}
        (gone,) = before - after
        counts[gone[0]] += 1
    observed = [counts[k] for k in (1, 2, 3, 4, 5)]
    assert stats.chisquare(observed).pvalue > 1e-3, observed


def exact_distribution(leaves, n, marked=()):
    """Enumerate the ideal process: n single-token steps, each uniform over the unmarked
    leaf tokens of the current token trie, clearing every mark when none is left (a new
    phase); ``marked`` are the token prefixes marked at the start. Returns
    P(final cached prefix set)."""
    start = frozenset(tuple(s[:i]) for s in leaves for i in range(1, len(s) + 1))
    dist = {(start, frozenset(marked)): 1.0}
    for _ in range(n):
        nxt = Counter()
        for (state, marks), p in dist.items():
            leaf_tokens = [x for x in state if not any(len(y) == len(x) + 1 and y[:-1] == x
                                                       for y in state)]
            cands = [x for x in leaf_tokens if x not in marks]
            if not cands:  # the phase ends
                marks, cands = frozenset(), leaf_tokens
            for x in cands:
                nxt[(state - {x}, marks)] += p / len(cands)
        dist = dict(nxt)
    out = Counter()
    for (state, _), p in dist.items():
        out[state] += p
    return dict(out)


# each way the fast sampler can run, forced: batches of draws with counts by counting
# draws, or from a multinomial, or with every emptying event ordered in time; Poisson
# clocks (the default, "batches", picks counted or multinomial by size)
FORCED = ["counted", "multinomial", "timed", "clocks"]


def test_every_sampler_but_the_default_is_forced_below():
    assert set(FORCED) == set(SAMPLERS) - {"batches"}


def test_an_unknown_sampler_is_a_clear_error():
    with pytest.raises(ConfigError, match="unknown rlt sampler 'fast'; choose one of: batches"):
        make_policy("rlt", seed=0, sampler="fast")


def run_process(name, sampler, leaves, n, trials, touch=()):
    """Final cached prefix sets of ``trials`` runs: leaves inserted, a new phase, the
    paths in ``touch`` matched (marked), then one eviction call of n tokens."""
    params = {} if sampler is None else {"sampler": sampler}
    seen = Counter()
    for seed in range(trials):
        c = RadixCache(100, make_policy(name, seed=seed, **params))
        for seq in leaves:
            c.insert(seq)
        if name == "rlt":  # start a new phase (the reference keeps marks on the nodes)
            c.policy._new_phase()
        else:
            for node in c.nodes():
                node.mark = 0
        for seq in touch:
            c.match(seq)
        assert c.evict(n) == n
        c.check_integrity()
        seen[frozenset(tuple(s[:i]) for s in map(list, c.cached_sequences())
                       for i in range(1, len(s) + 1))] += 1
    return seen


def assert_matches(seen, exact, trials):
    states = sorted(exact, key=lambda s: sorted(s))
    assert set(seen) <= set(exact)
    observed = [seen[s] for s in states]
    expected = [exact[s] * trials for s in states]
    assert stats.chisquare(observed, expected).pvalue > 1e-3


@pytest.mark.parametrize(("name", "sampler"), [
    *(("rlt", s) for s in FORCED),
    ("rlt_reference", None),
])
def test_multi_token_eviction_matches_the_exact_process(name, sampler):
    """Chi-square against the exactly enumerated process, with leaves that empty and a
    parent that is promoted mid-call, for each way the fast sampler can run."""
    leaves = ([0, 1], [0, 2, 2], [5], [6, 6, 6])
    trials = 4000
    seen = run_process(name, sampler, leaves, 4, trials)
    assert_matches(seen, exact_distribution(leaves, 4), trials)


@pytest.mark.parametrize(("name", "sampler"), [
    *(("rlt", s) for s in FORCED),
    ("rlt_reference", None),
])
def test_promotion_chains_and_a_phase_end_inside_one_call(name, sampler):
    """Chi-square against the enumerated process on a deeper tree: a parent promoted
    into its last child's slot empties in turn (a chain), a grandparent follows, marked
    nodes stay until the phase ends inside the call, then eviction goes on."""
    leaves = ([1, 2, 3], [1, 2, 4, 4], [1, 5], [6], [7, 7, 7])
    touch = ([7, 7, 7], [1, 5])  # marked: node [7,7,7], node [1] and leaf [5]
    n = 8
    trials = 4000
    seen = run_process(name, sampler, leaves, n, trials, touch)
    marked = {(7,), (7, 7), (7, 7, 7), (1,), (1, 5)}
    assert_matches(seen, exact_distribution(leaves, n, marked), trials)


@pytest.mark.parametrize(("name", "sampler"), [
    *(("rlt", s) for s in FORCED),
    ("rlt_reference", None),
])
def test_siblings_that_all_empty_promote_their_parent_in_time_order(name, sampler):
    """Chi-square against the enumerated process where the order of events in different
    slots matters: both children of [1, 2] empty in one call, so the last of them (in
    time) hands its slot to [1, 2], which empties in turn; [1] then waits for [1, 5, 5]
    to empty too. The fast path follows slots one by one and draws event times only for
    such parents; "timed" orders every event."""
    leaves = ([1, 2, 3], [1, 2, 4], [1, 5, 5], [6])
    trials = 4000
    for n in (3, 5):
        seen = run_process(name, sampler, leaves, n, trials)
        assert_matches(seen, exact_distribution(leaves, n), trials)


@pytest.mark.parametrize("sampler", FORCED)
def test_every_sampler_keeps_events_locks_and_pages_exact(sampler):
    """Each sampler, forced, on a random trace with locks and pages of 2: integrity after
    every call, locked paths kept, and the removed events (none empty) add up to the
    cache content."""
    rng = np.random.default_rng(5)
    for seed in range(20):
        c = RadixCache(40, make_policy("rlt", seed=seed, sampler=sampler), page_size=2)
        content: Counter = Counter()

        def listen(e, content=content):
            assert len(e.tokens) > 0  # no empty spans
            path = e.prefix.tolist() + e.tokens.tolist()
            for i in range(len(e.prefix) + 2, len(path) + 1, 2):  # whole pages
                content[tuple(path[:i])] += 1 if e.kind == "stored" else -1

        c.subscribe(listen)
        held = []
        for req in small_trace(seed, 60):
            r = c.match(req)
            if rng.random() < 0.3:
                c.lock(r.handle)
                held.append((r.handle, req[: r.hit].tolist()))
            c.insert(req)
            if held and rng.random() < 0.4:
                c.unlock(held.pop(0)[0])
            c.check_integrity()
            for _, path in held:
                assert c.match(path).hit == len(path)
        cached = {tuple(s[:i]) for s in map(list, c.cached_sequences())
                  for i in range(2, len(s) + 1, 2)}
        assert {x for x, v in content.items() if v} == cached
        assert all(v in (0, 1) for v in content.values())


def small_trace(seed=0, n=300):
    rng = np.random.default_rng(seed)
    heads = [rng.integers(0, 50, size=rng.integers(2, 12)) for _ in range(12)]
    return [np.concatenate([heads[rng.integers(0, 12)], rng.integers(0, 50, rng.integers(0, 6))])
            for _ in range(n)]


def test_fast_rlt_and_reference_give_the_same_hit_rate_distribution():
    """Two-sample KS test of hit rates over seeds: fast sampler == reference process."""
    trace = small_trace()
    fast = [replay(RadixCache(60, make_policy("rlt", seed=s)), trace).hit_rate
            for s in range(150)]
    ref = [replay(RadixCache(60, make_policy("rlt_reference", seed=10_000 + s)), trace).hit_rate
           for s in range(150)]
    assert stats.ks_2samp(fast, ref).pvalue > 1e-3
    assert abs(np.mean(fast) - np.mean(ref)) < 0.02


def test_same_seed_same_result():
    """RLT is reproducible: a seed fixes every choice."""
    trace = small_trace(1)
    a = replay(RadixCache(60, make_policy("rlt", seed=7)), trace)
    b = replay(RadixCache(60, make_policy("rlt", seed=7)), trace)
    assert a == b


def test_faithful_variant_marks_only_on_insert_and_match_splits():
    """rlt_faithful: a full match does not mark; a split in match marks the prefix part."""
    c = RadixCache(100, make_policy("rlt_faithful", seed=0))
    c.insert([1, 2, 3])
    c.insert([4, 5])
    pol = c.policy
    pol._new_phase()
    c.match([4, 5])  # fully matched: stays unmarked
    assert all(n.mark != pol.epoch for n in c.nodes())
    c.match([1, 2, 9])  # split: prefix [1,2] marked, suffix [3] not
    marked = {tuple(c.path_of(n)) for n in c.nodes() if n.mark == pol.epoch}
    assert marked == {(1, 2)}
    assert pol.marked_count == 2


def test_faithful_phase_triggers():
    """Trigger (a): n + marked_count >= capacity starts a new phase at the call."""
    c = RadixCache(10, make_policy("rlt_faithful", seed=0))
    c.insert([1, 2, 3, 4])
    c.insert([5, 6, 7, 8])  # 8 marked tokens
    phase = c.policy.phases
    c.evict(2)  # 2 + 8 >= 10
    assert c.policy.phases == phase + 1 and c.total == 6
    c.check_integrity()


def test_adversarial_cycle_collapses_lru_but_not_rlt():
    """paper.md section 4: cycling over one more leaf than fits makes leaf-LRU evict
    exactly what the next request needs (hit rate 0); RLT keeps a positive hit rate."""
    k, m = 8, 16  # k+1 distinct sequences of m tokens, room for k of them
    seqs = [np.full(m, i, dtype=np.int64) + np.arange(m) * 100 for i in range(k + 1)]
    trace = seqs * 40
    lru = replay(RadixCache(k * m, make_policy("lru")), trace).hit_rate
    rlt = np.mean([replay(RadixCache(k * m, make_policy("rlt", seed=s)), trace).hit_rate
                   for s in range(5)])
    assert lru == 0.0
    assert rlt > 0.3


def test_buffered_draws_are_uniform_and_reject_the_partial_range():
    """Slots come from 32-bit integers x as x // (2^32 // k): uniform (chi-square), and
    values at or past the largest multiple of k are dropped and made up from the buffer."""
    pol = SlotCounts(np.random.default_rng(0))
    for k in (7, 600):
        counts = pol.counted(k, 100 * k)
        assert counts.sum() == 100 * k and stats.chisquare(counts).pvalue > 1e-3
    assert pol.counted(1, 4).tolist() == [4]
    k = 7
    m = (1 << 32) // k
    lim = m * k
    assert lim + 3 < 1 << 32
    pol._buf = np.array([0, lim, m + 5, lim + 3, 6 * m + 7, m, 2 * m - 1, 0], dtype=np.uint32)
    pol._buf_pos = 0
    # the first five give slots 0, -, 1, -, 6; the two rejected are made up by m, 2m - 1
    assert pol.counted(k, 5).tolist() == [1, 3, 0, 0, 0, 0, 1]
    assert pol._buf_pos == 7
