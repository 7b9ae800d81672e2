"""``AdapterSlots`` on cases computed by hand."""

from __future__ import annotations

import pytest

from kvroute.routing.adapter_slots import AdapterSlots


def test_a_request_waits_for_the_first_adapter_to_be_done() -> None:
    s = AdapterSlots()
    s.sent(1, 0, "x", due=5.0)
    s.sent(2, 0, "x", due=9.0)  # x is done at 9
    s.sent(3, 0, "y", due=7.0)  # y at 7
    assert s.wait(0, "x", 2, now=1.0) == 0.0  # its adapter is there
    assert s.wait(0, "z", 3, now=1.0) == 0.0  # a slot is free
    assert s.wait(0, "z", 2, now=1.0) == pytest.approx(6.0)  # y frees first, at 7
    assert s.wait(0, "z", 2, now=8.0) == 0.0  # overdue: no wait claimed
    assert s.wait(1, "z", 1, now=1.0) == 0.0  # nothing open on worker 1
    s.done(3)
    assert s.wait(0, "z", 1, now=1.0) == pytest.approx(8.0)  # x's last, at 9
    s.done(3)  # twice: ignored
    s.done(1)
    s.done(2)
    assert s.wait(0, "z", 1, now=1.0) == 0.0


def test_removing_a_worker_renumbers_the_later_ones() -> None:
    s = AdapterSlots()
    s.sent(1, 0, "x", due=5.0)
    s.sent(2, 2, "y", due=6.0)
    s.remove_worker(0)
    assert s.wait(1, "z", 1, now=0.0) == pytest.approx(6.0)
    s.done(1)  # on the removed worker: forgotten
    s.done(2)
    assert s.wait(1, "z", 1, now=0.0) == 0.0
