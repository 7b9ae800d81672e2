"""The ZMQ framing shared by vLLM's and SGLang's publishers (and kvroute's).

* Live stream, PUB -> SUB: multipart ``[topic, seq, payload]``; ``seq`` is the batch's
  sequence number as 8 bytes big-endian, counting from 0 when the publisher starts.
  Subscribers filter by topic prefix (the engines' default topic is ``""``).
* Replay, on a ROUTER socket the publisher binds: a client sends the first sequence it
  wants as 8 bytes big-endian, after an empty delimiter frame (what a REQ socket adds;
  kvroute's DEALER adds it explicitly): ``[b"", start]``. The publisher answers with one
  message ``[b"", seq, payload]`` per buffered batch whose ``seq >= start``, oldest first,
  then ``[b"", END_OF_REPLAY, b""]``: sequence -1 and an empty payload. The buffer is
  bounded (vLLM's ``buffer_steps``, 10,000 batches by default), so the first answer can
  be later than ``start``.
* With data parallelism, rank ``r`` publishes on the endpoint's port + ``r``.
"""

from __future__ import annotations

__all__ = ["END_OF_REPLAY", "SEQ_BYTES", "offset_endpoint", "pack_seq", "unpack_seq"]

SEQ_BYTES = 8
END_OF_REPLAY = (-1).to_bytes(SEQ_BYTES, "big", signed=True)


def pack_seq(seq: int) -> bytes:
    """A sequence number as it travels (8 bytes, big-endian; -1 ends a replay)."""
    return seq.to_bytes(SEQ_BYTES, "big", signed=True)


def unpack_seq(frame: bytes) -> int | None:
    """The sequence number in ``frame``, or ``None`` when it is not 8 bytes."""
    if len(frame) != SEQ_BYTES:
        return None
    return int.from_bytes(frame, "big", signed=True)


def offset_endpoint(endpoint: str, dp_rank: int) -> str:
    """The endpoint data-parallel rank ``dp_rank`` publishes on (``tcp://h:p`` -> port
    ``p + dp_rank``; other transports get a ``_dp{rank}`` suffix, as the engines do)."""
    if dp_rank == 0:
        return endpoint
    if endpoint.startswith("tcp://"):
        host, _, port = endpoint.rpartition(":")
        return f"{host}:{int(port) + dp_rank}"
    return f"{endpoint}_dp{dp_rank}"
