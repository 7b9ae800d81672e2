"""The emulated worker's KV events: its radix cache's changes, published as vLLM does.

Contract:

* ``CachePublisher(cache, loop, endpoint, replay_endpoint, block_size)`` subscribes to
  the :class:`~kvroute.cache.radix.RadixCache` and turns every stored, removed or
  cleared span into block events (:class:`kvroute.events.RadixBlocks`: full blocks of
  ``block_size`` tokens, chained seeded hashes). The events of one turn of the event loop
  (one engine step, or one admission) go out as one batch, like vLLM's one batch per
  scheduler step, on an :class:`kvroute.events.EventPublisher` in vLLM's named-field
  wire form (0.26 and later), with its replay socket when ``replay_endpoint`` is given.
* ``dp_rank`` is the data-parallel rank every batch carries (vLLM's
  ``data_parallel_rank``; 0 for an engine without data parallelism, as vLLM sends).
* :attr:`endpoint` and :attr:`replay_endpoint` are the bound addresses (``:*`` binds a
  free port). ``close()`` sends what is pending and closes the sockets.
* :func:`rank_endpoint` is where rank ``r`` of a data-parallel engine publishes, as vLLM
  offsets it (:func:`kvroute.events.wire.offset_endpoint`: ``tcp://host:p`` -> port
  ``p + r``; ``tcp://host:*`` stays a free port of the rank's own);
  :func:`check_rank_endpoints` refuses, as a :class:`ConfigError`, a port offset past
  65535 or two ranks' sockets on one address.
* An address that cannot be bound (malformed, in use) is a :class:`ConfigError`.
* Needs the ``events`` extra.
"""

from __future__ import annotations

import asyncio
from typing import Any

from kvroute.cache.radix import KVEvent, RadixCache
from kvroute.errors import ConfigError

__all__ = ["CachePublisher", "check_rank_endpoints", "rank_endpoint"]


def rank_endpoint(endpoint: str, rank: int) -> str:
    """The address data-parallel rank ``rank`` binds for ``endpoint`` (see the module doc);
    a ConfigError when it has no port to offset or the offset port is out of range."""
    if rank == 0 or endpoint.endswith(":*"):
        return endpoint
    from kvroute.events.wire import offset_endpoint  # needs the events extra

    try:
        out = offset_endpoint(endpoint, rank)
    except ValueError:
        raise ConfigError(f"cannot give data-parallel rank {rank} a KV-events endpoint of "
                          f"its own from {endpoint!r}: give tcp://HOST:PORT (rank r "
                          "publishes on PORT + r) or tcp://HOST:* (free ports)") from None
    port = out.rpartition(":")[2]
    if out.startswith("tcp://") and port.isdigit() and int(port) > 65535:
        raise ConfigError(f"data-parallel rank {rank} would publish KV events on {out}, past "
                          f"port 65535: choose a lower port than {endpoint}")
    return out


def check_rank_endpoints(endpoint: str, replay_endpoint: str | None, dp_size: int) -> None:
    """A ConfigError unless every rank of ``dp_size`` has addresses of its own."""
    seen: dict[str, str] = {}
    for rank in range(dp_size):
        for what, base in (("KV-events", endpoint), ("replay", replay_endpoint)):
            if base is None:
                continue
            address = rank_endpoint(base, rank)
            if address.endswith(":*"):
                continue
            here = f"rank {rank}'s {what} endpoint"
            if address in seen:
                raise ConfigError(f"{here} and {seen[address]} would both be {address}: with "
                                  f"{dp_size} data-parallel ranks the ports P .. P+"
                                  f"{dp_size - 1} of the KV-events endpoint and those of its "
                                  "replay endpoint must not overlap")
            seen[address] = here


class CachePublisher:
    def __init__(self, cache: RadixCache, loop: asyncio.AbstractEventLoop, endpoint: str,
                 replay_endpoint: str | None, block_size: int = 16, seed: int = 0,
                 wire: str = "vllm", dp_rank: int = 0) -> None:
        from kvroute.server.kv_events import load_events

        ev = load_events()
        import zmq

        self._blocks = ev.RadixBlocks(block_size, seed=seed)
        try:
            self._pub: Any = ev.EventPublisher(endpoint, replay_endpoint=replay_endpoint,
                                               wire=wire, dp_rank=dp_rank)
        except zmq.ZMQError as e:  # a malformed address, or one in use
            where = endpoint + (f" (replay {replay_endpoint})" if replay_endpoint else "")
            raise ConfigError(f"cannot publish KV events on {where}: {e.strerror}; give "
                              "ZMQ addresses such as tcp://127.0.0.1:5557, on free ports"
                              ) from None
        self.endpoint: str = self._pub.endpoint
        self.replay_endpoint: str | None = self._pub.replay_endpoint
        self.block_size = block_size
        self.dp_rank = dp_rank
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
