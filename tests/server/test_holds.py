"""The live router's held requests (server.holds): released one at a time, in order, with
the seconds each was held; a client that leaves is dropped from the queue."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from kvroute.routing.router import Router
from kvroute.server.holds import Holds
from tests.routing.test_hold_queue import Gate, _req


def _holds(gate: Gate) -> tuple[Holds, list[float]]:
    clock = [0.0]
    holds = Holds(Router(gate, 2), lambda now: np.ones(2, dtype=bool), lambda: clock[0])
    return holds, clock


def _closed() -> tuple[Gate, Holds, list[float]]:
    """A gate that holds everything, and its queue of futures."""
    gate = Gate()
    gate.closed = True
    return gate, *_holds(gate)


async def _held(holds: Holds, *sizes: int) -> list[asyncio.Task[float]]:
    """One waiting task per prompt size, queued in order (each has reached the queue)."""
    tasks = [asyncio.create_task(holds.wait(_req(n))) for n in sizes]
    await asyncio.sleep(0)
    return tasks


@pytest.mark.asyncio
async def test_not_held_returns_at_once() -> None:
    holds, _ = _holds(Gate())
    assert await holds.wait(_req(3)) == 0.0
    assert len(holds) == 0


@pytest.mark.asyncio
async def test_released_in_order_one_per_kick_with_the_time_held() -> None:
    gate, holds, clock = _closed()
    first, second = await _held(holds, 2, 3)
    assert len(holds) == 2
    clock[0] = 1.5
    holds.kick()  # still held
    await asyncio.sleep(0)
    assert not first.done()
    gate.closed = False
    holds.kick()
    assert await first == 1.5
    assert not second.done() and len(holds) == 1  # its turn comes with the next kick
    clock[0] = 2.0
    holds.kick()
    assert await second == 2.0
    await holds.close()


@pytest.mark.asyncio
async def test_the_ticker_releases_without_a_kick() -> None:
    gate, holds, _ = _closed()
    (task,) = await _held(holds, 2)
    gate.closed = False
    assert await asyncio.wait_for(task, timeout=5.0) == 0.0
    await holds.close()


@pytest.mark.asyncio
async def test_a_client_that_leaves_is_dropped() -> None:
    gate, holds, _ = _closed()
    gone, stays = await _held(holds, 2, 3)
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert len(holds) == 1
    gate.closed = False
    holds.kick()
    assert await stays == 0.0
    await holds.close()


@pytest.mark.asyncio
async def test_nothing_more_is_released_until_the_released_one_resumes() -> None:
    """Between a release and its task's resumption (where the forwarder routes it) other
    events kick too: they release nothing, so the next head is judged with the first
    routed."""
    gate, holds, _ = _closed()
    first, second = await _held(holds, 2, 3)
    gate.closed = False
    holds.kick()  # releases the first
    holds.kick()  # a first token elsewhere, before the first's task resumed: nothing
    assert len(holds) == 1
    assert await first == 0.0
    await asyncio.sleep(0)
    assert not second.done()
    holds.kick()  # the first was routed: the next one's turn
    assert await second == 0.0
    await holds.close()


@pytest.mark.asyncio
async def test_a_released_request_forgets_its_matches() -> None:
    """Routed when its task resumes, so what the index gave at the release is not kept;
    a request not held keeps it (the forwarder routes it at once, with the same walk)."""
    gate, holds, _ = _closed()
    req = _req(2)
    task = asyncio.create_task(holds.wait(req))
    await asyncio.sleep(0)
    req._matched = np.zeros(2, dtype=np.int64)  # as the release's check would leave it
    gate.closed = False
    holds.kick()
    await task
    assert req._matched is None and req._last_sent is None
    kept = _req(3)
    kept._matched = np.ones(2, dtype=np.int64)
    assert await holds.wait(kept) == 0.0
    assert kept._matched is not None
    await holds.close()
