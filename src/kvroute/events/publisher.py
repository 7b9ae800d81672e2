"""A KV-event publisher speaking the engines' protocol, for tests and the emulated worker.

Wire-compatible with vLLM's and SGLang's ZMQ publishers (:mod:`kvroute.events.wire`):
batches go out as ``[topic, seq, payload]`` with ``seq`` counting from ``first_seq``
(0: a fresh engine), payloads encoded in one of :data:`kvroute.events.encode.WIRE_FORMATS`;
the last ``buffer_steps`` payloads are kept and a background thread answers replay
requests on a ROUTER socket (``[id, b"", start]`` -> ``[id, b"", seq, payload]`` per kept
batch with ``seq >= start``, then ``[id, b"", -1, b""]``).

The live socket is an XPUB (a PUB that also hears subscriptions), so a test can wait
until a subscriber is listening instead of sleeping (:meth:`EventPublisher.wait_subscribed`).
``publish(..., send=False)`` keeps a batch for replay without sending it: a message lost
on the wire. ``send_frames`` puts arbitrary frames on the live socket (garbage tests).

Endpoints ending in ``:*`` (the default, on 127.0.0.1) bind an ephemeral port;
:attr:`endpoint` and :attr:`replay_endpoint` are the bound addresses. Use one publisher
from one thread (the replay thread is internal).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import zmq

from kvroute.events.encode import encode_batch
from kvroute.events.model import EventBatch, KvEvent
from kvroute.events.wire import END_OF_REPLAY, pack_seq

__all__ = ["EventPublisher"]


class EventPublisher:
    """Publishes kvroute events in an engine's wire format, with a replay socket."""

    def __init__(self, endpoint: str = "tcp://127.0.0.1:*", *,
                 replay_endpoint: str | None = "tcp://127.0.0.1:*", wire: str = "vllm",
                 topic: str = "", buffer_steps: int = 10_000, dp_rank: int | None = 0,
                 first_seq: int = 0, clock: Callable[[], float] = time.time,
                 context: zmq.Context[Any] | None = None) -> None:
        encode_batch(EventBatch(0.0, ()), wire)  # an unknown wire fails here
        self.wire = wire
        self.dp_rank = dp_rank
        self.subscriptions = 0
        self._topic = topic.encode()
        self._clock = clock
        self._next = first_seq
        self._buffer: deque[tuple[int, bytes]] = deque(maxlen=buffer_steps)
        self._lock = threading.Lock()
        ctx = context or zmq.Context.instance()
        self._pub = ctx.socket(zmq.XPUB)
        self._pub.setsockopt(zmq.LINGER, 0)
        self._pub.setsockopt(zmq.XPUB_VERBOSE, 1)
        self._pub.setsockopt(zmq.SNDHWM, 100_000)
        self._pub.bind(endpoint)
        self.endpoint: str = self._pub.getsockopt_string(zmq.LAST_ENDPOINT)
        self.replay_endpoint: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if replay_endpoint is not None:
            router = ctx.socket(zmq.ROUTER)
            router.setsockopt(zmq.LINGER, 0)
            try:
                router.bind(replay_endpoint)
            except zmq.ZMQError:
                router.close(linger=0)
                self._pub.close(linger=0)
                raise
            self.replay_endpoint = router.getsockopt_string(zmq.LAST_ENDPOINT)
            self._thread = threading.Thread(target=self._serve, args=(router,),
                                            name="kvroute-events-replay", daemon=True)
            self._thread.start()

    @property
    def next_seq(self) -> int:
        return self._next

    def publish(self, events: Iterable[KvEvent], *, ts: float | None = None,
                send: bool = True) -> int:
        """Publish one batch; its sequence number."""
        batch = EventBatch(self._clock() if ts is None else ts, tuple(events), self.dp_rank)
        return self.publish_payload(encode_batch(batch, self.wire), send=send)

    def publish_payload(self, payload: bytes, *, send: bool = True) -> int:
        """Publish an already encoded payload (fixtures, garbage) under the next
        sequence number; ``send=False`` only keeps it for replay."""
        seq = self._next
        self._next += 1
        with self._lock:
            self._buffer.append((seq, payload))
        if send:
            self._pub.send_multipart([self._topic, pack_seq(seq), payload])
        return seq

    def send_frames(self, frames: list[bytes]) -> None:
        """Put raw frames on the live socket (no sequence number is used)."""
        self._pub.send_multipart(frames)

    def wait_subscribed(self, count: int = 1, timeout: float = 5.0) -> bool:
        """Wait until ``count`` subscriptions in all have reached the live socket.

        A SUB resends its subscription after reconnecting only when its owner next uses
        it (libzmq handles the reconnect as a command to the socket): keep polling a
        subscriber that waits for a restarted publisher."""
        deadline = time.monotonic() + timeout
        while self.subscriptions < count:
            left_ms = int((deadline - time.monotonic()) * 1000)
            if left_ms <= 0 or not self._pub.poll(left_ms):
                return False
            if self._pub.recv()[:1] == b"\x01":
                self.subscriptions += 1
        return True

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._pub.close(linger=0)

    def __enter__(self) -> EventPublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _serve(self, router: zmq.Socket[Any]) -> None:
        try:
            while not self._stop.is_set():
                if not router.poll(20):
                    continue
                frames = router.recv_multipart()
                if len(frames) != 3 or frames[1] != b"" or len(frames[2]) != 8:
                    continue
                client, start = frames[0], int.from_bytes(frames[2], "big", signed=True)
                with self._lock:
                    kept = [item for item in self._buffer if item[0] >= start]
                for seq, payload in kept:
                    router.send_multipart([client, b"", pack_seq(seq), payload])
                router.send_multipart([client, b"", END_OF_REPLAY, b""])
        finally:
            router.close(linger=0)
