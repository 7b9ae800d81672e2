"""The ordering and resynchronisation of one engine's event stream, without sockets.

:class:`EventStream` is fed what a subscriber's sockets receive (live messages, replay
answers, replay time-outs) and returns the events to apply, each batch exactly once and
in sequence order. The socket drivers (:mod:`kvroute.events.subscriber`) only move
frames; a simulator or a test can drive it directly.

Contract (``expected`` is the next sequence number to apply, ``start_seq`` at first):

* A live message ``[topic, seq, payload]`` with ``seq == expected`` is applied; one with
  ``seq < expected`` is a duplicate (it came by replay already) and is dropped.
* ``seq > expected`` is a gap: the message is held and :meth:`replay_request` returns
  ``expected``; the driver asks the engine's replay socket for everything from there and
  feeds the answers to :meth:`on_replay`. Answers below ``expected`` are dropped, the
  others applied in order; once the end marker arrives the held message is handled like
  a live one. Sequence numbers the replay cannot supply (the engine's buffer no longer
  holds them) are counted in ``lost``.
* A live ``seq`` at or below the previous live ``seq`` means the publisher started over
  (an engine restart; one ZMQ connection never reorders or repeats): the stream emits
  :class:`AllBlocksCleared` (a restarted engine's cache is empty), counts a restart and
  replays from 0, so what the publisher holds is rebuilt whatever the cause.
* The first replay, from ``start_seq``, is requested before anything else: 0 rebuilds
  the engine's whole buffered history (a router restart); a later value resumes after a
  state the caller kept.
* Without a replay socket (``can_replay=False``) gaps are counted as lost at once.
* A replay that times out (:meth:`replay_failed`) is counted; what it did not deliver is
  lost, and the stream is out of sync (the loss cannot be measured).
* :attr:`in_sync` is ``True`` while no batch or event is known to be missing since the
  start, the last restart, the last ``AllBlocksCleared`` or the publisher's first batch
  (``seq`` 0: its engine started empty, so an engine that comes up after the router, or
  after a replay that timed out, is in sync from its first batch), and no replay is
  pending.
  Events of an unknown kind do not clear it (they are counted by the decoder).
* ``stats.lag_s`` is ``clock() - ts`` of the last applied batch (``clock`` is injected;
  the engines stamp batches with wall-clock seconds).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from kvroute.errors import IntegrityError
from kvroute.events.decode import Decoder
from kvroute.events.model import AllBlocksCleared, KvEvent
from kvroute.events.wire import unpack_seq

__all__ = ["EventStream", "StreamStats"]


@dataclass
class StreamStats:
    """Counters of one stream (see :mod:`kvroute.events.stream` for the meanings)."""

    batches: int = 0
    duplicates: int = 0
    gaps: int = 0
    lost: int = 0
    replays: int = 0
    replay_failures: int = 0
    restarts: int = 0
    bad_frames: int = 0
    last_seq: int | None = None
    lag_s: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class EventStream:
    """Sequencing, gap detection and replay bookkeeping for one publisher."""

    def __init__(self, decoder: Decoder, *, clock: Callable[[], float],
                 start_seq: int = 0, can_replay: bool = True) -> None:
        if start_seq < 0:
            raise IntegrityError(f"start_seq must be >= 0, got {start_seq}")
        self.decoder = decoder
        self.stats = StreamStats()
        self.can_replay = can_replay
        self._clock = clock
        self._expected = start_seq
        self._live_last: int | None = None
        self._held: tuple[int, bytes] | None = None
        self._wanted: int | None = start_seq if can_replay else None
        self._open = False
        self._exact = True

    # ------------------------------------------------------------------ state
    @property
    def next_seq(self) -> int:
        """The next sequence number to apply."""
        return self._expected

    @property
    def replaying(self) -> bool:
        """A replay is wanted or under way: feed :meth:`on_replay` before live messages."""
        return self._wanted is not None or self._open

    @property
    def in_sync(self) -> bool:
        return self._exact and not self.replaying

    def replay_request(self) -> int | None:
        """The first sequence number of the replay to run now (the replay is then open),
        or ``None`` when none is wanted."""
        start, self._wanted = self._wanted, None
        if start is not None:
            self._open = True
        return start

    # ------------------------------------------------------------------ input
    def on_live(self, frames: Sequence[bytes]) -> list[KvEvent]:
        """A message from the SUB socket; the events to apply now (maybe none)."""
        if self.replaying:
            raise IntegrityError("on_live during a replay: finish the replay first")
        seq = unpack_seq(frames[1]) if len(frames) == 3 else None
        if seq is None or seq < 0:
            self.stats.bad_frames += 1
            return []
        payload = frames[2]
        out: list[KvEvent] = []
        restart = self._live_last is not None and seq <= self._live_last
        if restart:
            self.stats.restarts += 1
            out.append(AllBlocksCleared())
            self._expected = 0
            self._exact = True
        self._live_last = seq
        if restart and self.can_replay:
            self._held = (seq, bytes(payload))
            self._wanted = 0
            return out
        if seq > self._expected:
            self.stats.gaps += 1
            if self.can_replay:
                self._held = (seq, bytes(payload))
                self._wanted = self._expected
                return out
        return out + self._take(seq, payload)

    def on_replay(self, frames: Sequence[bytes]) -> list[KvEvent]:
        """One answer ``[seq, payload]`` from the replay socket (delimiter removed)."""
        if not self._open:
            self.stats.bad_frames += 1  # a late answer to a replay that timed out
            return []
        seq = unpack_seq(frames[0]) if len(frames) == 2 else None
        if seq is None:
            self.stats.bad_frames += 1
            return []
        if seq == -1:
            self._open = False
            self.stats.replays += 1
            return self._release()
        return self._take(seq, frames[1])

    def replay_failed(self) -> list[KvEvent]:
        """The open replay got no end marker in time; go on with what arrived."""
        self._open = False
        self._exact = False
        self.stats.replay_failures += 1
        return self._release()

    # ------------------------------------------------------------------ internals
    def _release(self) -> list[KvEvent]:
        held, self._held = self._held, None
        return [] if held is None else self._take(*held)

    def _take(self, seq: int, payload: bytes) -> list[KvEvent]:
        if seq < self._expected:
            self.stats.duplicates += 1
            return []
        if seq > self._expected:
            self.stats.lost += seq - self._expected
            self._exact = False
        elif seq == 0:
            self._exact = True  # the publisher's first batch: nothing before it is missing
        self._expected = seq + 1
        self.stats.batches += 1
        self.stats.last_seq = seq
        batch = self.decoder.decode(payload)
        if batch is None:
            self._exact = False
            return []
        self.stats.lag_s = self._clock() - batch.ts
        if batch.skipped:
            self._exact = False
        elif any(type(e) is AllBlocksCleared for e in batch.events):
            self._exact = True
        return list(batch.events)
