from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvroute.routing.worker_speed import Slowness, WorkerSpeed


def test_factors_hand_computed() -> None:
    """Ten samples of worker 1 at twice the predicted time (forget 1, prior 10, z 0):
    l = [0, 10 ln 2 / 20, 0], median 0: factors [1, 2^1/2 / e^0.15, 1] with the margin,
    [1, 2^1/2, 1] without. Two workers: the median is halfway, dev = -+ln 2 / 4."""
    speed = WorkerSpeed(forget=1.0, prior=10.0, z=0.0)
    bare = WorkerSpeed(forget=1.0, prior=10.0, z=0.0, margin=0.0)
    for _ in range(10):
        speed.update(1, observed=0.4, predicted=0.2)
        bare.update(1, observed=0.4, predicted=0.2)
    assert speed.factors(3) == pytest.approx([1.0, 2 ** 0.5 / math.exp(0.15), 1.0])
    assert bare.factors(3) == pytest.approx([1.0, 2 ** 0.5, 1.0])
    speed.remove(2)
    dev = math.log(2) / 4 - 0.15
    assert speed.factors(2) == pytest.approx([math.exp(-dev), math.exp(dev)])


def test_equal_workers_keep_exactly_one_and_a_half_speed_worker_is_found() -> None:
    """Equal workers in log-normal noise (sd 0.3): every factor is exactly 1 (no deviation
    is two standard errors from the median and beyond the margin). A worker at half
    speed in the same noise is told apart within 50 of its samples (l about 50 ln 2 /
    60; its factor about exp(0.58 - 0.15)), and the others stay at 1."""
    rng = np.random.default_rng(0)
    equal = WorkerSpeed(forget=0.998)
    for _ in range(2000):
        equal.update(int(rng.integers(4)), observed=float(rng.lognormal(0.0, 0.3)),
                     predicted=1.0)
    assert np.array_equal(equal.factors(4), np.ones(4))
    half = WorkerSpeed(forget=0.998)
    for _ in range(50):
        for w in range(4):
            half.update(w, observed=float(rng.lognormal(math.log(2) * (w == 3), 0.3)),
                        predicted=1.0)
    f = half.factors(4)
    assert f[0] == f[1] == f[2] == 1 and 1.35 < f[3] < 1.75


def test_bad_times_teach_nothing_a_ratio_is_clipped_and_removal_renumbers() -> None:
    speed = WorkerSpeed(forget=1.0, prior=1e-9, z=0.0, margin=0.0)
    speed.update(0, observed=1e9, predicted=1.0)  # log ratio clipped at 3
    speed.update(2, observed=1.0, predicted=1.0)
    speed.update(1, observed=0.0, predicted=1.0)
    speed.update(1, observed=1.0, predicted=-1.0)
    assert speed.factors(3) == pytest.approx([math.exp(3.0), 1.0, 1.0])
    speed.remove(1)
    assert speed.factors(2) == pytest.approx(np.exp([1.5, -1.5]))


@settings(deadline=None)  # no time limit: a loaded machine must not fail it
@given(st.lists(st.floats(-3.0, 3.0), min_size=1, max_size=70))
def test_median_is_numpys(values: list[float]) -> None:
    """The refresh's median (the standard library's, cheaper on a few values) is
    ``np.median``'s, to the bit (odd and even counts)."""
    assert statistics.median(values) == float(np.median(np.array(values)))


def test_slowness_acts_where_both_witnesses_agree() -> None:
    """Worker 1 is slow to the TTFT witness; until the decode witness says so too its
    slowness is 1 (and ``alike``); then the TTFT witness's factor; a decode witness that
    calls it fast instead leaves it at 1."""
    slow = Slowness(forget=1.0)
    for _ in range(40):
        slow.ttft.update(1, observed=0.4, predicted=0.2)
        slow.ttft.update(0, observed=0.2, predicted=0.2)
        slow.ttft.update(2, observed=0.2, predicted=0.2)
    assert slow.factors(3) == [1.0, 1.0, 1.0] and slow.alike
    opposite = Slowness(forget=1.0)
    opposite.ttft = slow.ttft
    for s, ratio in ((slow, 2.0), (opposite, 0.5)):
        for _ in range(40):
            s.decode.update(1, observed=0.1 * ratio, predicted=0.1)
            s.decode.update(0, observed=0.1, predicted=0.1)
            s.decode.update(2, observed=0.1, predicted=0.1)
    assert slow.factors(3) == [1.0, slow.ttft.factors(3)[1], 1.0] and not slow.alike
    assert slow.factors(3)[1] > 1.4
    assert opposite.factors(3) == [1.0, 1.0, 1.0] and opposite.alike
    assert [slow.factor(w) for w in range(3)] == slow.factors(3)  # one worker's alone
    assert [opposite.factor(w) for w in range(3)] == opposite.factors(3)
    slow.remove(0)  # the slow worker is now worker 0, judged against one other
    factors = slow.factors(2)
    assert factors[0] > 1.0 > factors[1]


@settings(deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.floats(0.05, 20.0)), min_size=1,
                max_size=120))
def test_factors_kept_current_equal_a_full_recompute(samples: list[tuple[int, float]]) -> None:
    """``update`` recomputes one worker's factor while the median stands still, all of
    them when it moves: after any sequence, to the bit what a full recompute gives."""
    speed = WorkerSpeed(forget=0.9, prior=1.0, z=1.0, margin=0.05)
    for w, ratio in samples:
        speed.update(w, observed=ratio, predicted=1.0)
        kept = speed.factors(6)
        speed._refresh()
        assert speed.factors(6) == kept
