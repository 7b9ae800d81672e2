"""Inflow: each worker's share of the uncached units sent lately, as excess over the mean."""

from __future__ import annotations

import pytest

from kvroute.routing.inflow import Inflow


def test_excess_over_the_mean_with_forgetting() -> None:
    f = Inflow(forget=0.5)
    assert f.excess(3) == [0.0, 0.0, 0.0]  # nothing sent yet
    f.add(0, 100.0)
    assert f.excess(2) == pytest.approx([1.0, -1.0])  # twice the mean, and nothing
    f.add(1, 100.0)  # worker 0's 100 decays to 50 first
    assert f.excess(2) == pytest.approx([50 * 2 / 150 - 1, 100 * 2 / 150 - 1])
    assert f.excess(4) == pytest.approx([50 * 4 / 150 - 1, 100 * 4 / 150 - 1, -1.0, -1.0])
    f.remove_worker(0)
    assert f.excess(1) == pytest.approx([0.0])


def test_the_scale_renormalises_without_changing_the_shares() -> None:
    f = Inflow(forget=0.5)
    plain = [0.0, 0.0]  # the same sums decayed one by one
    for _ in range(600):  # 0.5 ** 1200 would underflow
        for w, units in ((0, 1.0), (1, 3.0)):
            f.add(w, units)
            plain = [v * 0.5 for v in plain]
            plain[w] += units
    mean = sum(plain) / 2
    assert f.excess(2) == pytest.approx([v / mean - 1 for v in plain])
