"""The simulator's exact router index: each worker's cache events, delivered late.

``attach_exact_indexes(routers, workers, loop, delay, block_size)`` gives every simulated
worker an exact source in each router (:meth:`kvroute.routing.router.Router.attach_exact`):
a :class:`kvroute.events.BlockIndex` fed the worker's radix-cache changes as block events
(:class:`kvroute.events.RadixBlocks`, blocks of ``block_size`` tokens, as the emulated
worker publishes them). Each event reaches the index ``delay`` seconds of simulated time
after the cache changed (0: at once), in order; the source is always in sync (nothing is
lost in process). Needs the ``events`` extra.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kvroute.cache.radix import KVEvent
from kvroute.errors import ConfigError
from kvroute.routing.router import Router
from kvroute.sim.events import STEP_END, EventLoop
from kvroute.sim.worker import SimWorker

__all__ = ["attach_exact_indexes"]


def attach_exact_indexes(routers: Sequence[Router], workers: Sequence[SimWorker],
                         loop: EventLoop, delay: float, block_size: int) -> list[Any]:
    """Wire every worker's cache to an exact index that each of ``routers`` reads; the
    indexes."""
    if delay < 0:
        raise ConfigError(f"the event delay must be >= 0 s, got {delay}")
    from kvroute.server.kv_events import load_events

    ev = load_events()
    indexes = []
    for w in workers:
        index = ev.BlockIndex()
        blocks = ev.RadixBlocks(block_size)

        def listener(event: KVEvent, index: Any = index, blocks: Any = blocks) -> None:
            block_event = blocks.convert(event)
            if block_event is None:
                return
            if delay == 0:
                index.apply(block_event)
            else:
                loop.at(loop.now + delay, STEP_END, index.apply, block_event)

        w.cache.subscribe(listener)
        for router in routers:
            router.attach_exact(w.index, ev.BlockIndexSource(index))
        indexes.append(index)
    return indexes
