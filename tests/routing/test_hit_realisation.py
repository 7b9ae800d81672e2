"""``HitRealisation``: the share of a believed prefix that engines really had cached,
overall and by the prefix's age; hand-computed."""

from __future__ import annotations

import numpy as np
import pytest

from kvroute.routing.hit_realisation import HitRealisation


def test_age_buckets_double_in_width() -> None:
    """unit 0.125 s: bucket floor(log2(age / 0.125 + 1)), capped at 15; -1 if no record."""
    r = HitRealisation(1.0)
    last = [100.0, 99.9, 99.875, 99.625, 99.0, -1e9, -np.inf]
    assert [r.bucket(t, 100.0) for t in last] == [0, 0, 1, 2, 3, 15, -1]
    assert r.bucket(101.0, 100.0) == 0  # a record after now: age 0


def test_sparse_buckets_borrow_the_overall_rate() -> None:
    """Two samples of 1000 matched units: 900 cached at age bucket 0, 100 at bucket 3.
    Overall 1000 / 2000 = 0.5; one sample's worth m = 1000; bucket 0 (900 + 500) / 2000
    = 0.7, bucket 3 (100 + 500) / 2000 = 0.3, an empty bucket 500 / 1000 = 0.5, unknown
    age the overall rate."""
    r = HitRealisation(1.0)
    assert [r.rate(0), r.rate(-1)] == [1.0, 1.0]  # nothing learned yet
    r.update(0, 900, 1000)
    r.update(3, 1500, 1000)  # an engine may report more than the index matched: capped
    assert r.overall == pytest.approx(1900 / 2000)
    r = HitRealisation(1.0)
    r.update(0, 900, 1000)
    r.update(3, 100, 1000)
    assert r.overall == pytest.approx(0.5)
    assert [r.rate(b) for b in (0, 3, 5, -1)] == pytest.approx([0.7, 0.3, 0.5, 0.5])
    assert r.by_age() == {"0s": pytest.approx(0.9), "0.875s": pytest.approx(0.1)}
    assert r.oldest() == pytest.approx(0.3)  # bucket 3's estimate
    assert HitRealisation(1.0).oldest() == 1.0  # nothing seen: the overall rate


def test_old_evidence_is_forgotten() -> None:
    """forget 0.5: the first sample (all cached) weighs half the second (none cached)."""
    r = HitRealisation(0.5)
    r.update(2, 1000, 1000)
    r.update(2, 0, 1000)
    assert r.overall == pytest.approx(500 / 1500)
    assert r.by_age() == {"0.375s": pytest.approx(500 / 1500)}
    r.update(-1, 1000, 1000)  # no age: the overall rate only
    assert r.overall == pytest.approx(1250 / 1750)
    assert r.by_age() == {"0.375s": pytest.approx(500 / 1500)}


def test_many_decays_lose_nothing() -> None:
    """Thousands of samples at forget 0.5 (the scaled sums are renormalised on the way):
    the estimates are those of the last few samples, as computed directly."""
    r = HitRealisation(0.5)
    for _ in range(3000):
        r.update(4, 250, 1000)
    r.update(1, 1000, 1000)
    assert r.overall == pytest.approx(1250 / 2000)
    assert r.by_age() == {"1.875s": pytest.approx(0.25), "0.125s": pytest.approx(1.0)}
    # m = (1000 + 1000) / 2 = 1000 (the sums of matched and of samples, decayed alike)
    assert r.rate(4) == pytest.approx((250 + 625) / (1000 + 1000))
    assert r.oldest() == r.rate(4)
