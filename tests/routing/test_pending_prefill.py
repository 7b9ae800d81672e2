"""``PendingPrefill``: units counted until their predicted first token or completion."""

from __future__ import annotations

from kvroute.routing.pending_prefill import PendingPrefill


def test_settle_done_and_worker_removal() -> None:
    p = PendingPrefill()
    p.add(1, 0, 100.0, due=1.0)
    p.add(2, 2, 50.0, due=2.0)
    p.add(3, 1, 30.0, due=3.0)
    assert p.units == [100.0, 30.0, 50.0]
    p.settle(1.0)  # due at 1.0: done
    assert p.units == [0.0, 30.0, 50.0]
    p.done(3)  # completed before its first token
    p.done(3)  # twice is once
    assert p.units == [0.0, 0.0, 50.0]
    p.remove_worker(1)  # worker 2 becomes 1
    assert p.units == [0.0, 50.0]
    p.settle(5.0)  # key 3's heap entry is stale: nothing to undo
    assert p.units == [0.0, 0.0]
    p.add(4, 0, 10.0, due=9.0)
    p.remove_worker(0)  # its worker left: forgotten
    p.done(4)
    assert p.units == [0.0]
