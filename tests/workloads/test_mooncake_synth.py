"""The synthetic Mooncake-format trace generator: seeded, loadable, and with the fitted
statistics of the trace it models (embedded numbers, measured on the public trace)."""

import numpy as np

from kvroute.workloads.mooncake import load_mooncake, write_mooncake
from kvroute.workloads.mooncake_synth import (
    MOONCAKE_SYNTHETIC,
    SHAPES,
    block_repeat_fraction,
    fit_stats,
    synth_records,
)

S = MOONCAKE_SYNTHETIC


def test_generated_trace_has_the_fitted_statistics() -> None:
    recs = list(synth_records(4000, S, seed=1))
    got = fit_stats(recs)
    assert abs(got.rate / S.rate - 1) < 0.05
    assert abs(got.reuse - S.reuse) < 0.03
    assert got.edits[0][:2] == S.edits[0][:2] and abs(got.edits[0][2] - S.edits[0][2]) < 0.06
    for q in (5, 10, 15):  # quantiles 25%, 50%, 75% of the length distributions
        assert abs(got.output_length[q] / S.output_length[q] - 1) < 0.15
        assert abs(got.tail[q] / S.tail[q] - 1) < 0.15
        assert abs(got.fresh_blocks[q] / S.fresh_blocks[q] - 1) < 0.15
    # not fitted directly, measured on the real trace: 64% of blocks repeat, 15,325 tokens
    assert abs(block_repeat_fraction(recs) - 0.6396) < 0.06
    assert abs(np.mean([r.input_length for r in recs]) / 15325 - 1) < 0.15
    assert abs(np.mean([r.output_length for r in recs]) / 149.1 - 1) < 0.1


def test_seeded_and_loadable(tmp_path) -> None:
    a, b = list(synth_records(300, S, seed=7)), list(synth_records(300, S, seed=7))
    assert [(r.timestamp, r.input_length, r.hash_ids.tolist()) for r in a] == \
        [(r.timestamp, r.input_length, r.hash_ids.tolist()) for r in b]
    c = list(synth_records(300, S, seed=8))
    assert [r.input_length for r in c] != [r.input_length for r in a]
    path = tmp_path / "t.jsonl"
    assert write_mooncake(path, a) == 300
    wl = load_mooncake(path)
    reqs = list(wl)
    assert len(reqs) == 300 and wl.meta["prompt_tokens"] == sum(r.input_length for r in a)
    assert [r.prompt_len for r in reqs] == [r.input_length for r in a]


def test_invented_shapes_reuse_more_and_keep_the_fitted_rest() -> None:
    """The conversation and agentic shapes continue more requests than the fitted trace,
    and their parents are recent ones; arrivals and output lengths stay the fitted ones."""
    assert SHAPES["mooncake"] is S
    repeat = {}
    for name in ("conversation", "agentic"):
        recs = list(synth_records(3000, SHAPES[name], seed=2))
        got = fit_stats(recs)
        assert abs(got.reuse - SHAPES[name].reuse) < 0.03, name
        assert got.distance[10] < S.distance[10] / 3, name  # median parent distance
        assert abs(got.rate / S.rate - 1) < 0.05, name
        assert abs(got.output_length[10] / S.output_length[10] - 1) < 0.15, name
        repeat[name] = block_repeat_fraction(recs)
    assert 0.6396 < repeat["conversation"] < repeat["agentic"]
    fresh = fit_stats(list(synth_records(3000, SHAPES["agentic"], seed=2))).fresh_blocks
    assert fresh[0] >= 10 and fresh[-1] <= 60  # sessions start with 5,000-30,000 tokens


def test_fresh_shapes_share_nothing() -> None:
    """``fresh`` and ``fresh_short`` continue no request: no block repeats; ``fresh`` keeps
    the fitted prompt lengths, ``fresh_short`` draws 1-16 blocks, most of them short."""
    for name in ("fresh", "fresh_short"):
        recs = list(synth_records(2000, SHAPES[name], seed=3))
        assert block_repeat_fraction(recs) == 0.0, name
        assert abs(fit_stats(recs).rate / S.rate - 1) < 0.05, name
    blocks = [len(r.hash_ids) for r in synth_records(2000, SHAPES["fresh_short"], seed=3)]
    assert min(blocks) == 1 and max(blocks) <= 16
    assert sorted(blocks)[len(blocks) // 2] <= 3  # the median prompt is 1-3 blocks
    long_fresh = fit_stats(list(synth_records(2000, SHAPES["fresh"], seed=3))).fresh_blocks
    assert long_fresh[-2] > 50  # the fitted trace's long prompts (99th percentile)
