"""``AdapterSlots`` on cases computed by hand."""

from __future__ import annotations

import math

import pytest

from kvroute.routing.adapter_slots import AdapterSlots


def test_a_request_waits_for_the_first_adapter_to_be_done() -> None:
    """One request each: an adapter's span is its request's (nothing else has come)."""
    s = AdapterSlots()
    s.sent(1, 0, "x", due=9.0, now=0.0)  # x: span 9
    s.sent(3, 0, "y", due=7.0, now=0.0)  # y: span 7
    assert s.wait(0, "x", 2, now=1.0) == 0.0  # its adapter is there
    assert s.wait(0, "z", 3, now=1.0) == 0.0  # a slot is free
    assert s.wait(0, "z", 2, now=1.0) == pytest.approx(7.0)  # y first: max(6, 7)
    assert s.wait(1, "z", 1, now=1.0) == 0.0  # nothing open on worker 1
    s.done(3)
    s.done(3)  # twice: ignored
    assert s.wait(0, "z", 1, now=1.0) == pytest.approx(9.0)  # x: max(8, 9)
    s.done(1)
    assert s.wait(0, "z", 1, now=1.0) == 0.0


def test_an_adapter_in_demand_holds_its_slot_for_a_busy_period() -> None:
    """x's requests come 1 s apart and take 2 s each: lam = 1, s = 2, so x is expected to
    hold its slot for a busy period of (e^2 - 1) / 1 = 6.39 s, longer than its open
    requests' latest due; short requests (s = 0.1) free it after about s."""
    s = AdapterSlots()
    s.sent(1, 0, "x", due=2.0, now=0.0)
    s.sent(2, 0, "x", due=3.0, now=1.0)
    assert s.wait(0, "z", 1, now=1.5) == pytest.approx(math.expm1(2.0))
    quick = AdapterSlots()
    quick.sent(1, 0, "x", due=0.1, now=0.0)
    quick.sent(2, 0, "x", due=1.1, now=1.0)
    assert quick.wait(0, "z", 1, now=1.0) == pytest.approx(max(0.1, math.expm1(0.1)))


def test_the_last_free_slot_is_kept_for_an_adapter_open_nowhere() -> None:
    """Worker 0 has 2 slots, x holds one: z (open nowhere) takes the other at once; y,
    open on another worker, finds it kept and would wait for x."""
    s = AdapterSlots()
    s.sent(1, 0, "x", due=4.0, now=0.0)
    assert s.wait(0, "z", 2, now=1.0) == 0.0
    assert s.wait(0, "y", 2, now=1.0, elsewhere=True) == pytest.approx(4.0)
    assert s.wait(0, "y", 1, now=1.0, elsewhere=True) == pytest.approx(4.0)  # no reserve of 0
    assert s.wait(0, "y", 3, now=1.0, elsewhere=True) == 0.0


def test_removing_a_worker_renumbers_the_later_ones() -> None:
    s = AdapterSlots()
    s.sent(1, 0, "x", due=5.0, now=0.0)
    s.sent(2, 2, "y", due=6.0, now=0.0)
    s.remove_worker(0)
    assert s.wait(1, "z", 1, now=0.0) == pytest.approx(6.0)
    s.done(1)  # on the removed worker: forgotten
    s.done(2)
    assert s.wait(1, "z", 1, now=0.0) == 0.0
