"""Runs (token sequences as runs of consecutive ids) and the ceilings computed on them:
the same hits as the token arrays, request for request."""

import numpy as np
import pytest

from kvroute.cache import RadixCache, make_policy, replay
from kvroute.cache.ceilings import compact_requests, hit_rate_ceilings
from kvroute.cache.runs import RunRadixCache, Runs
from kvroute.workloads.mooncake import block_tokens
from kvroute.workloads.request import Request, output_ids


def _mixed(rng: np.random.Generator, n: int) -> np.ndarray:
    """Ids with ascending runs, descending runs, repeats and jumps."""
    parts = []
    while sum(map(len, parts)) < n:
        kind = rng.integers(4)
        v, k = int(rng.integers(-50, 50)), int(rng.integers(1, 7))
        parts.append(v + np.arange(k) * (1, -1, 0, 3)[kind])
    return np.concatenate(parts)[:n].astype(np.int64)


def test_encoding_is_exact_and_slices_match() -> None:
    rng = np.random.default_rng(1)
    for _ in range(200):
        arr = _mixed(rng, int(rng.integers(1, 40)))
        r = Runs.of(arr)
        assert len(r) == len(arr)
        np.testing.assert_array_equal(r.array(), arr)
        a, b = sorted(rng.integers(0, len(arr) + 1, size=2).tolist())
        np.testing.assert_array_equal(r[a:b].array(), arr[a:b])
        i = int(rng.integers(len(arr)))
        assert r[i] == arr[i] and r.item(i) == arr[i]


def test_common_prefix_matches_tokens_whatever_the_split() -> None:
    rng = np.random.default_rng(2)
    for _ in range(300):
        x = _mixed(rng, int(rng.integers(1, 30)))
        y = x.copy()
        cut = int(rng.integers(len(y) + 1))
        y[cut:] = _mixed(rng, len(y) - cut) if cut < len(y) else y[cut:]
        pos = int(rng.integers(len(y)))
        n = min(len(x), len(y) - pos)
        diff = np.flatnonzero(x[:n] != y[pos:pos + n])
        want = int(diff[0]) if len(diff) else n
        # the same ids split differently (concatenated slices) compare equal
        k = int(rng.integers(len(y) + 1))
        ry = Runs.of(y)
        resplit = Runs(*(t1 + t2 for t1, t2 in zip(
            (ry[:k].starts, ry[:k].steps, ry[:k].ends),
            (ry[k:].starts, ry[k:].steps, tuple(e + k for e in ry[k:].ends)), strict=True)))
        assert Runs.of(x).common(ry, pos) == want
        assert Runs.of(x).common(resplit, pos) == want
    assert Runs.of(np.arange(5)).common(Runs.of(np.arange(5)[::-1])) == 0
    assert Runs.of(np.array([3, 4, 5])).common(Runs.of(np.array([3, 2, 1]))) == 1


def _mooncake_like(n: int, seed: int) -> list[Request]:
    """Prompts that share block prefixes (partial last blocks of 64-token blocks)."""
    rng = np.random.default_rng(seed)
    chains: list[list[int]] = []
    nxt, reqs = 0, []
    for rid in range(n):
        if chains and rng.random() < 0.6:
            parent = chains[int(rng.integers(len(chains)))]
            chain = parent[: int(rng.integers(1, len(parent) + 1))]
        else:
            chain = []
        new = int(rng.integers(0, 4)) + (not chain)
        chain = chain + list(range(nxt, nxt + new))
        nxt += new
        chains.append(chain)
        length = (len(chain) - 1) * 64 + int(rng.integers(1, 65))
        reqs.append(Request(rid, block_tokens(np.array(chain), length, 64),
                            int(rng.integers(1, 40))))
    return reqs


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_ceilings_on_runs_equal_the_token_path(seed: int) -> None:
    reqs = _mooncake_like(150, seed)
    pairs = [(r.tokens, np.concatenate([r.tokens, output_ids(r)])) for r in reqs]
    prompts, inserts = compact_requests(pairs)
    assert isinstance(prompts[0], Runs)
    tok_p, tok_i = [p for p, _ in pairs], [q for _, q in pairs]
    optimal = []
    for cap in (300, 2000, 20000):
        old = hit_rate_ceilings(tok_p, cap, workers=2, inserts=tok_i)
        new = hit_rate_ceilings(prompts, cap, workers=2, inserts=inserts)
        assert new == old
        optimal.append(old.optimal)
    assert 0 < optimal[0] < optimal[1] <= old.infinite < 1  # capacity binds at 2 x 300


@pytest.mark.parametrize("policy", ["lru", "optimal"])
def test_replay_hits_equal_request_for_request(policy: str) -> None:
    reqs = _mooncake_like(120, 4)
    tokens = [r.tokens for r in reqs]
    runs = [Runs.of(t) for t in tokens]
    hits = []
    for seqs, tree in ((tokens, RadixCache), (runs, RunRadixCache)):
        kw = {"requests": seqs} if policy == "optimal" else {}
        cache = tree(1500, make_policy(policy, **kw))
        per: list[int] = []
        for j, s in enumerate(seqs):
            per.append(cache.match(s, now=j).hit)
            cache.insert(s, now=j)
            if j % 20 == 0:
                cache.check_integrity()
        hits.append(per)
        assert replay(tree(1500, make_policy(policy, **kw)), seqs).hit_tokens == sum(per)
    assert hits[0] == hits[1] and sum(hits[0]) > 0


def test_compact_falls_back_to_arrays_for_random_ids() -> None:
    rng = np.random.default_rng(5)
    seqs = [rng.integers(0, 1000, size=50) for _ in range(10)]
    prompts, inserts = compact_requests((s, s) for s in seqs)
    assert all(isinstance(p, np.ndarray) for p in prompts + inserts)
    np.testing.assert_array_equal(prompts[3], seqs[3])
    assert hit_rate_ceilings(prompts, 100) == hit_rate_ceilings(seqs, 100)


def test_runs_compact_only_when_the_runs_are_long() -> None:
    """``Runs.compact``: ``Runs.of`` where the runs hold at least ``ratio`` ids each on
    average, None where they do not (random ids: one run per id), the empty sequence
    compact."""
    rng = np.random.default_rng(2)
    blocks = np.concatenate([7 * 512 + np.arange(512), 3 * 512 + np.arange(100)])
    r = Runs.compact(blocks, 16)
    assert r is not None and r.runs == 2
    np.testing.assert_array_equal(r.array(), blocks)
    assert Runs.compact(r, 16) is r and Runs.compact(r, 400) is None
    assert Runs.compact(blocks, 400) is None  # 306 ids per run
    assert Runs.compact(rng.integers(0, 10**6, size=64), 16) is None
    for _ in range(100):
        arr = _mixed(rng, int(rng.integers(1, 40)))
        ratio = float(rng.uniform(0.5, 4.0))
        full = Runs.of(arr)
        got = Runs.compact(arr, ratio)
        if len(arr) >= ratio * full.runs:
            assert got is not None
            assert (got.starts, got.steps, got.ends) == (full.starts, full.steps, full.ends)
        else:
            assert got is None
    assert len(Runs.compact(np.zeros(0, dtype=np.int64), 16)) == 0
