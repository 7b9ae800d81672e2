"""Subscribers: one engine's ZMQ event stream -> kvroute events, in order, exactly once.

:class:`EventSubscriber` is driven step by step (``poll(timeout)``, ``drain()``: the
simulator, tests, scripts); :class:`AsyncEventSubscriber` is the same over
``zmq.asyncio`` for the live router. Both only move frames: sequencing, gap detection,
replays and restarts are :class:`kvroute.events.stream.EventStream`'s (its module
docstring is the contract), decoding is :mod:`kvroute.events.decode`'s.

Sockets: a SUB connected to ``endpoint`` (subscribed to the ``topic`` prefix) and, when
``replay_endpoint`` is given, a DEALER connected to the engine's replay ROUTER
(:mod:`kvroute.events.wire`). The subscriber connects; the engine binds. The first
``poll`` runs the start replay (from ``start_seq``), then reads the live stream; a gap or
a restart runs a replay inside the ``poll`` that met it, waiting at most
``replay_timeout`` seconds for its end marker (a timed-out DEALER is replaced, so a late
answer cannot be taken for the next one). ``poll`` returns the events to apply, in order;
apply every list to the worker's :class:`kvroute.events.block_index.BlockIndex`.

``poll(timeout)`` waits up to ``timeout`` seconds for a first message only when it has
nothing to return yet, then takes what is queued, at most ``max_messages`` messages.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import zmq
import zmq.asyncio

from kvroute.events.decode import DecodeStats, make_decoder
from kvroute.events.model import KvEvent
from kvroute.events.stream import EventStream, StreamStats
from kvroute.events.wire import pack_seq

__all__ = ["AsyncEventSubscriber", "EventSubscriber"]


class _Base:
    def __init__(self, endpoint: str, *, replay_endpoint: str | None, engine: str,
                 topic: str, start_seq: int, replay_timeout: float,
                 clock: Callable[[], float], context: Any, rcvhwm: int,
                 max_messages: int) -> None:
        self.endpoint = endpoint
        self.replay_endpoint = replay_endpoint
        self.replay_timeout = replay_timeout
        self.max_messages = max_messages
        self.stream = EventStream(make_decoder(engine), clock=clock, start_seq=start_seq,
                                  can_replay=replay_endpoint is not None)
        self._ctx = context
        self._sub = context.socket(zmq.SUB)
        self._sub.setsockopt(zmq.LINGER, 0)
        self._sub.setsockopt(zmq.RCVHWM, rcvhwm)
        self._sub.setsockopt(zmq.SUBSCRIBE, topic.encode())
        self._sub.connect(endpoint)
        self._dealer = self._new_dealer()

    def _new_dealer(self) -> Any:
        if self.replay_endpoint is None:
            return None
        dealer = self._ctx.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.connect(self.replay_endpoint)
        return dealer

    def _reset_dealer(self) -> None:
        self._dealer.close(linger=0)
        self._dealer = self._new_dealer()

    def _request(self, start: int) -> None:
        self._dealer.send_multipart([b"", pack_seq(start)])

    @staticmethod
    def _answer(frames: list[bytes]) -> list[bytes]:
        return frames[1:] if frames and frames[0] == b"" else frames

    @property
    def stats(self) -> StreamStats:
        return self.stream.stats

    @property
    def decode_stats(self) -> DecodeStats:
        return self.stream.decoder.stats

    @property
    def in_sync(self) -> bool:
        """No loss known since the start, the last restart or the last clear."""
        return self.stream.in_sync

    @property
    def last_seq(self) -> int | None:
        return self.stream.stats.last_seq

    def counters(self) -> dict[str, Any]:
        """Every counter, flat: the stream's, ``events`` and ``decode_errors``."""
        out = self.stats.as_dict()
        out["events"] = dict(self.decode_stats.events)
        out["decode_errors"] = dict(self.decode_stats.errors)
        out["in_sync"] = self.in_sync
        return out

    def close(self) -> None:
        self._sub.close(linger=0)
        if self._dealer is not None:
            self._dealer.close(linger=0)


class EventSubscriber(_Base):
    """Step-by-step subscriber on blocking pyzmq sockets."""

    def __init__(self, endpoint: str, *, replay_endpoint: str | None = None,
                 engine: str = "vllm", topic: str = "", start_seq: int = 0,
                 replay_timeout: float = 2.0, clock: Callable[[], float] = time.time,
                 context: zmq.Context[Any] | None = None, rcvhwm: int = 100_000,
                 max_messages: int = 10_000) -> None:
        super().__init__(endpoint, replay_endpoint=replay_endpoint, engine=engine,
                         topic=topic, start_seq=start_seq, replay_timeout=replay_timeout,
                         clock=clock, context=context or zmq.Context.instance(),
                         rcvhwm=rcvhwm, max_messages=max_messages)

    def poll(self, timeout: float = 0.0) -> list[KvEvent]:
        """Run due replays, then read the live stream (see the module docstring)."""
        out = self._replays()
        if not self._sub.poll(0 if out else int(timeout * 1000)):
            return out
        for _ in range(self.max_messages):
            try:
                frames = self._sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            out += self.stream.on_live(frames)
            out += self._replays()
        return out

    def drain(self) -> list[KvEvent]:
        """Everything available now, without waiting."""
        return self.poll(0.0)

    def _replays(self) -> list[KvEvent]:
        out: list[KvEvent] = []
        while (start := self.stream.replay_request()) is not None:
            self._request(start)
            deadline = time.monotonic() + self.replay_timeout
            while self.stream.replaying:
                left_ms = int((deadline - time.monotonic()) * 1000)
                if left_ms <= 0 or not self._dealer.poll(left_ms):
                    out += self.stream.replay_failed()
                    self._reset_dealer()
                    break
                out += self.stream.on_replay(self._answer(self._dealer.recv_multipart()))
        return out

    def __enter__(self) -> EventSubscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncEventSubscriber(_Base):
    """The same subscriber on ``zmq.asyncio`` sockets, for an asyncio event loop."""

    def __init__(self, endpoint: str, *, replay_endpoint: str | None = None,
                 engine: str = "vllm", topic: str = "", start_seq: int = 0,
                 replay_timeout: float = 2.0, clock: Callable[[], float] = time.time,
                 context: zmq.asyncio.Context | None = None, rcvhwm: int = 100_000,
                 max_messages: int = 10_000) -> None:
        super().__init__(endpoint, replay_endpoint=replay_endpoint, engine=engine,
                         topic=topic, start_seq=start_seq, replay_timeout=replay_timeout,
                         clock=clock, context=context or zmq.asyncio.Context.instance(),
                         rcvhwm=rcvhwm, max_messages=max_messages)

    async def poll(self, timeout: float = 0.0) -> list[KvEvent]:
        """Run due replays, then read the live stream (see the module docstring)."""
        out = await self._replays()
        if not await self._sub.poll(0 if out else int(timeout * 1000)):
            return out
        for _ in range(self.max_messages):
            if not await self._sub.poll(0):
                break
            out += self.stream.on_live(await self._sub.recv_multipart())
            out += await self._replays()
        return out

    async def _replays(self) -> list[KvEvent]:
        out: list[KvEvent] = []
        while (start := self.stream.replay_request()) is not None:
            await self._dealer.send_multipart([b"", pack_seq(start)])
            deadline = time.monotonic() + self.replay_timeout
            while self.stream.replaying:
                left_ms = int((deadline - time.monotonic()) * 1000)
                if left_ms <= 0 or not await self._dealer.poll(left_ms):
                    out += self.stream.replay_failed()
                    self._reset_dealer()
                    break
                frames = await self._dealer.recv_multipart()
                out += self.stream.on_replay(self._answer(frames))
        return out

    async def __aenter__(self) -> AsyncEventSubscriber:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
