"""UncachedShare: f_w over a policy's open requests, exactly 0 sums once a worker empties."""

from __future__ import annotations

import pytest

from kvroute.routing.uncached_share import UncachedShare


def test_share_of_uncached_units_per_worker() -> None:
    s = UncachedShare()
    s.ensure(3)
    assert s.frac == [1.0, 1.0, 1.0]  # no open request: all count as uncached
    s.add(1, 300.0, 1000)
    s.add(1, 0.1, 1000)
    assert s.frac[1] == pytest.approx(300.1 / 2000)
    s.remove(1, 300.0, 1000)
    assert s.frac[1] == pytest.approx(0.1 / 1000)
    s.remove(1, 0.1, 1000)  # the last one: sums exactly 0, f back to 1
    assert (s.uncached[1], s.units[1], s.count[1], s.frac[1]) == (0.0, 0.0, 0.0, 1.0)
    s.add(0, 5.0, 4)  # predicted above the prompt (a stale belief): capped at 1
    assert s.frac[0] == 1.0
    s.add(2, 1.0, 4)
    s.remove_worker(0)
    assert len(s) == 2 and s.frac == [1.0, 0.25]
    s.remove(5, 1.0, 4)  # a worker that left: nothing
    assert len(s) == 2
