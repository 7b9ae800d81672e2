"""PoolRoom: the wait for room in a worker's KV pool, from the requests decoding there."""

from __future__ import annotations

import pytest

from kvroute.routing.pool_room import PoolRoom


def test_no_wait_while_the_request_fits() -> None:
    room = PoolRoom()
    room.started(1, 0, size=150.0, due=10.0)
    assert room.wait(0, need=50.0, pool=200.0, used=150.0, now=2.0) == 0.0
    assert room.wait(1, need=200.0, pool=200.0, used=0.0, now=2.0) == 0.0  # nothing there


def test_waits_until_the_requests_due_first_free_enough() -> None:
    """Pool 200, 180 held by two decoding requests (100 due at 5, 80 due at 9): a request
    needing 60 waits for the first (free 20 -> 120), one needing 150 for both (-> 200)."""
    room = PoolRoom()
    room.started(1, 0, size=80.0, due=9.0)
    room.started(2, 0, size=100.0, due=5.0)
    assert room.held(0) == 180.0
    assert room.wait(0, need=60.0, pool=200.0, used=180.0, now=2.0) == pytest.approx(3.0)
    assert room.wait(0, need=150.0, pool=200.0, used=180.0, now=2.0) == pytest.approx(7.0)
    assert room.wait(0, need=150.0, pool=200.0, used=180.0, now=12.0) == 0.0  # overdue
    assert room.wait(0, need=250.0, pool=200.0, used=180.0, now=2.0) == 0.0  # never fits


def test_sizes_are_scaled_to_what_the_engine_reports_in_use() -> None:
    """Two requests of 100 that share half their prompt: the engine reports 100 in use, so
    each holds 50 here. Need 120 of 200: free 100, then 150 once the first is due."""
    room = PoolRoom()
    room.started(1, 0, size=100.0, due=4.0)
    room.started(2, 0, size=100.0, due=8.0)
    assert room.wait(0, need=90.0, pool=200.0, used=100.0, now=1.0) == 0.0
    assert room.wait(0, need=120.0, pool=200.0, used=100.0, now=1.0) == pytest.approx(3.0)


def test_done_and_removed_workers() -> None:
    room = PoolRoom()
    room.started(1, 0, size=150.0, due=10.0)
    room.started(2, 2, size=150.0, due=20.0)
    room.done(1)
    room.done(99)  # never started: nothing to do
    assert room.held(0) == 0.0
    assert room.wait(0, need=100.0, pool=200.0, used=0.0, now=0.0) == 0.0
    room.remove_worker(1)  # worker 2 becomes worker 1
    assert room.held(1) == 150.0 and room.held(2) == 0.0
    assert room.wait(1, need=100.0, pool=200.0, used=150.0, now=5.0) == pytest.approx(15.0)
    room.done(2)
    assert room.held(1) == 0.0


def test_a_prefix_held_by_an_open_request_needs_no_room() -> None:
    """Need: prompt units + output tokens x units a token, less the matched prefix where
    the request that last carried it (sent at ``last``) is still open there."""
    room = PoolRoom()
    room.sent(0, 1.5)
    room.sent(0, 1.5)  # two requests sent at the same moment
    assert room.need(1000, 4, 0, matched=800, last=1.5, per_token=4.0) == 1000 + 16 - 800
    assert room.need(1000, None, 1, matched=800, last=1.5, per_token=4.0) == 1000
    room.closed(0, 1.5)
    assert room.need(1000, 4, 0, matched=800, last=1.5, per_token=1.0) == 204
    room.closed(0, 1.5)
    assert room.need(1000, 4, 0, matched=800, last=1.5, per_token=1.0) == 1004
    room.sent(2, 3.0)
    room.remove_worker(1)
    assert room.need(10, 0, 1, matched=10, last=3.0, per_token=1.0) == 0


def test_slot_wait_is_the_kth_decoding_request_due() -> None:
    """Three requests decoding on worker 0, due at 9, 5 and 7: the first in line for a slot
    waits until 5, the second until 7; beyond the three, the last due (a lower bound)."""
    room = PoolRoom()
    for rid, due in ((1, 9.0), (2, 5.0), (3, 7.0)):
        room.started(rid, 0, size=10.0, due=due)
    assert room.slot_wait(0, 1, now=2.0) == pytest.approx(3.0)
    assert room.slot_wait(0, 2, now=2.0) == pytest.approx(5.0)
    assert room.slot_wait(0, 5, now=2.0) == pytest.approx(7.0)
    assert room.slot_wait(0, 1, now=6.0) == 0.0  # overdue
    assert room.slot_wait(1, 1, now=2.0) == 0.0  # nothing decodes there
    room.done(2)
    assert room.slot_wait(0, 1, now=2.0) == pytest.approx(5.0)
