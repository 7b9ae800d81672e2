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
    s.done(3, now=1.0)
    s.done(3, now=1.0)  # twice: ignored
    assert s.wait(0, "z", 1, now=1.0) == pytest.approx(9.0)  # x: max(8, 9)
    s.done(1, now=1.0)
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
    s.done(1, now=1.0)  # on the removed worker: forgotten
    s.done(2, now=1.0)
    assert s.wait(1, "z", 1, now=0.0) == 0.0


def test_a_slot_held_is_priced_by_the_cold_arrivals_it_may_block() -> None:
    """x arrives cold at 0 (worker 0, due 4: the hold before any ended is 4), y cold at 2
    (worker 1): one gap of 2 s, so A = 4 / 2 = 2. With one slot free, Erlang B gives
    B(0) = 1, B(1) = 2 / 3, B(2) = (4 / 3) / (2 + 4 / 3) = 0.4: a slot opened costs
    2 (1 - 2 / 3) = 2 / 3 s a second, one extended 2 (2 / 3 - 0.4) = 0.533."""
    s = AdapterSlots()
    s.sent(1, 0, "x", due=4.0, now=0.0)
    assert s.slot_rates(1) == (0.0, 0.0)  # one cold arrival: no rate yet
    s.sent(2, 1, "y", due=6.0, now=2.0)
    rates = s.slot_rates(1)
    assert rates == pytest.approx((2 / 3, 2 * (2 / 3 - 0.4)))
    assert s.price(0, "x", due=7.0, now=3.0, rates=rates, slots=1) == pytest.approx(
        3 * rates[1])
    assert s.price(0, "x", due=3.5, now=3.0, rates=rates, slots=1) == 0.0  # within x's due
    assert s.price(1, "x", due=7.0, now=3.0, rates=rates, slots=1) == pytest.approx(4 * 2 / 3)
    # none free: a slot opened waits for one (c = 1), an extended one could free the first
    assert s.slot_rates(0) == pytest.approx((2 / 3, 2 / 3))
    assert s.slot_rates(50)[0] < 1e-9  # slots to spare


def test_the_cold_hold_is_learned_from_the_slots_that_freed() -> None:
    """x's slot (opened cold at 0) frees at 5: the hold is 5, not the first span 4. A second
    copy of x (x open elsewhere) is not a cold arrival and its hold is not counted."""
    s = AdapterSlots()
    s.sent(1, 0, "x", due=4.0, now=0.0)
    s.sent(2, 1, "x", due=3.0, now=1.0)  # not cold
    s.sent(3, 1, "y", due=6.0, now=2.0)  # cold: gap 2
    assert s.slot_rates(1)[0] == pytest.approx(2 * (1 - 2 / 3))  # A = 4 / 2
    s.done(2, now=2.5)
    s.done(1, now=5.0)
    load = 5.0 / 2.0
    assert s.slot_rates(1)[0] == pytest.approx(load * (1 - load / (1 + load)))
    s.sent(4, 0, "x", due=9.0, now=6.0)  # cold again: the gaps 2 and 4 average 3
    load = 5.0 / 3.0
    assert s.slot_rates(1)[0] == pytest.approx(load * (1 - load / (1 + load)))


def test_adapters_past_the_slots_wait_behind_the_holders_and_price_their_extension() -> None:
    """One slot on worker 0: x opened first and holds it, y waits behind it (two requests).
    A new y request waits for x too (before, an adapter open there counted as running);
    a z waits for x, not for y. Extending x's hold by 3 s delays y's two requests 3 s
    each, beside the cold arrivals' rate."""
    s = AdapterSlots()
    s.sent(1, 0, "x", due=5.0, now=0.0)
    s.sent(2, 0, "y", due=9.0, now=0.5)
    s.sent(3, 0, "y", due=9.5, now=1.0)
    assert s.wait(0, "x", 1, now=1.0) == 0.0
    assert s.wait(0, "y", 1, now=1.0) == pytest.approx(5.0)
    assert s.wait(0, "z", 1, now=1.0) == pytest.approx(5.0)
    assert s.wait(0, "y", 2, now=1.0) == 0.0  # two slots: both run
    rates = s.slot_rates(0)
    assert rates[1] > 0.0
    assert s.price(0, "x", due=8.0, now=1.0, rates=rates, slots=1) == pytest.approx(
        3 * (rates[1] + 2))
    assert s.price(0, "y", due=12.0, now=1.0, rates=rates, slots=1) == pytest.approx(
        2.5 * rates[1])  # y holds nothing: nobody waits behind it
    s.done(1, now=5.0)  # x is done: y holds the slot
    assert s.wait(0, "y", 1, now=5.0) == 0.0



def test_an_adapter_waits_in_one_place_and_a_copy_is_expected_to_drain() -> None:
    """One slot per worker. x holds worker 0 and worker 1 (where it streams: a busy
    period), y holds worker 2. z would wait on worker 1 only until x's open requests there
    are due (x's next ones can go to worker 0, where nothing waits), on worker 2 y's span.
    Once z queues on worker 1, its next request is closed out of every other full worker
    (it waits in one place), not out of one with a free slot; x, open on worker 0, may
    still join its copy on worker 1."""
    s = AdapterSlots()
    s.sent(1, 0, "x", due=10.0, now=0.0)
    s.sent(2, 1, "x", due=6.0, now=0.0)
    s.sent(3, 1, "x", due=7.0, now=1.0)
    s.sent(4, 2, "y", due=9.0, now=0.0)
    assert s.wait(1, "z", 1, now=2.0) == pytest.approx(5.0)  # 7 - 2, not e^6 - 1
    assert s.wait(2, "z", 1, now=2.0) == pytest.approx(9.0)  # y's span
    assert not s.closed(2, "z", 1)  # z is open nowhere yet
    s.sent(5, 1, "z", due=12.0, now=2.0)
    assert s.closed(0, "z", 1) and s.closed(2, "z", 1)
    assert not s.closed(1, "z", 1) and not s.closed(3, "z", 1)  # its queue; an idle worker
    assert not s.closed(2, "z", 2)  # a free slot there
    assert not s.closed(1, "x", 1) and not s.closed(0, "x", 1)
    # w queues behind x on worker 0 too: x has no copy where nothing waits, so a v waits
    # there for x's expected span (10), not only for its open request (due in 8)
    s.sent(6, 0, "w", due=20.0, now=2.0)
    assert s.wait(0, "v", 1, now=2.0) == pytest.approx(10.0)


def test_the_cluster_counts_the_workers_open_to_an_adapter_and_prices_free_slots() -> None:
    """x is open on one of two capped workers; with cold arrivals seen the rates are
    those of the slots free in the cluster (1 + 2 = 3); a worker reporting no cap means
    slots enough: no price."""
    from kvroute.routing.base import WorkerState

    s = AdapterSlots()
    for k in range(4):  # cold arrivals 1 s apart, each holding its slot 8 s
        s.sent(10 + k, 0, f"c{k}", due=k + 8.0, now=float(k))
        s.done(10 + k, now=k + 8.0)
    capped = [WorkerState(0, max_loras=2, adapters={"x": 1}), WorkerState(1, max_loras=2)]
    assert s.cluster("x", capped) == (1, s.slot_rates(3))
    assert s.slot_rates(3)[0] > 0.0
    assert s.cluster("y", [*capped, WorkerState(2)]) == (0, (0.0, 0.0))
