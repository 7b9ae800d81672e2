"""The emulated worker's KV events: its radix cache's changes, published as vLLM does.

Contract:

* ``CachePublisher(cache, loop, endpoint, replay_endpoint, block_size)`` subscribes to
  the :class:`~kvroute.cache.radix.RadixCache` and turns every stored, removed or
  cleared span into block events (:class:`kvroute.events.RadixBlocks`: full blocks of
  ``block_size`` tokens, chained seeded hashes). The events of one turn of the event loop
  (one engine step, or one admission) go out as one batch, like vLLM's one batch per
  scheduler step, on an :class:`kvroute.events.EventPublisher` in vLLM's named-field
  wire form (0.26 and later), with its replay socket when ``replay_endpoint`` is given.
* :attr:`endpoint` and :attr:`replay_endpoint` are the bound addresses (``:*`` binds a
  free port). ``close()`` sends what is pending and closes the sockets.
* An address that cannot be bound (malformed, in use) is a :class:`ConfigError`.
* Needs the ``events`` extra.
"""

from __future__ import annotations

import asyncio
from typing import Any

from kvroute.cache.radix import KVEvent, RadixCache
from kvroute.errors import ConfigError

__all__ = ["CachePublisher"]


class CachePublisher:
    def __init__(self, cache: RadixCache, loop: asyncio.AbstractEventLoop, endpoint: str,
                 replay_endpoint: str | None, block_size: int = 16, seed: int = 0,
                 wire: str = "vllm") -> None:
        from kvroute.server.kv_events import load_events

        ev = load_events()
        import zmq

        self._blocks = ev.RadixBlocks(block_size, seed=seed)
        try:
            self._pub: Any = ev.EventPublisher(endpoint, replay_endpoint=replay_endpoint,
                                               wire=wire)
        except zmq.ZMQError as e:  # a malformed address, or one in use
            where = endpoint + (f" (replay {replay_endpoint})" if replay_endpoint else "")
            raise ConfigError(f"cannot publish KV events on {where}: {e.strerror}; give "
                              "ZMQ addresses such as tcp://127.0.0.1:5557, on free ports"
                              ) from None
        self.endpoint: str = self._pub.endpoint
        self.replay_endpoint: str | None = self._pub.replay_endpoint
        self.block_size = block_size
        self._loop = loop
        self._pending: list[Any] = []
        cache.subscribe(self._on_event)

    @property
    def next_seq(self) -> int:
        """The sequence number the next batch will carry (batches published so far)."""
        n: int = self._pub.next_seq
        return n

    @property
    def pending(self) -> int:
        """Events waiting for the next batch."""
        return len(self._pending)

    def _on_event(self, event: KVEvent) -> None:
        block_event = self._blocks.convert(event)
        if block_event is None:
            return
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(block_event)

    def flush(self) -> None:
        """Publish the pending events as one batch."""
        if self._pending:
            events, self._pending = self._pending, []
            self._pub.publish(events)

    def close(self) -> None:
        self.flush()
        self._pub.close()
