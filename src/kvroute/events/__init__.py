"""Exact cache state from the engines: vLLM's and SGLang's KV events over ZMQ.

Needs the ``events`` extra (pyzmq, msgspec): ``pip install 'kvroute[events]'``.

* :mod:`~kvroute.events.model`: kvroute's engine-neutral events (``BlockStored``,
  ``BlockRemoved``, ``AllBlocksCleared``, ``EventBatch``).
* :mod:`~kvroute.events.schema`, :mod:`~kvroute.events.decode`: the engines' wire
  schemas and the decoders (``make_decoder("vllm" | "sglang")``).
* :mod:`~kvroute.events.encode`: the reverse, for publishing.
* :mod:`~kvroute.events.wire`: the ZMQ framing and the replay protocol.
* :mod:`~kvroute.events.stream`: sequencing, gaps, replays, restarts (no sockets).
* :mod:`~kvroute.events.subscriber`: ``EventSubscriber`` (step by step) and
  ``AsyncEventSubscriber`` (asyncio).
* :mod:`~kvroute.events.publisher`: ``EventPublisher`` (tests, the emulated worker).
* :mod:`~kvroute.events.block_index`: ``BlockIndex``, the exact per-worker index;
  :mod:`~kvroute.events.exact_source`: ``BlockIndexSource``, one as the router's exact
  source for a worker.
* :mod:`~kvroute.events.radix_blocks`: ``RadixBlocks``, a radix cache's changes as block
  events (the emulated worker and the simulator publish them).

See ``docs/events.md``.
"""

from kvroute.errors import ConfigError

try:
    import msgspec  # noqa: F401
    import zmq  # noqa: F401
except ImportError as e:  # pragma: no cover - exercised by a test in a fresh import
    raise ConfigError("kvroute.events needs pyzmq and msgspec: "
                      "pip install 'kvroute[events]'") from e

from kvroute.events.block_index import BlockIndex, IndexStats
from kvroute.events.decode import DECODERS, Decoder, DecodeStats, make_decoder
from kvroute.events.encode import WIRE_FORMATS, encode_batch
from kvroute.events.exact_source import BlockIndexSource
from kvroute.events.model import (
    MEDIUM_GPU,
    AllBlocksCleared,
    BlockHash,
    BlockRemoved,
    BlockStored,
    EventBatch,
    KvEvent,
)
from kvroute.events.publisher import EventPublisher
from kvroute.events.radix_blocks import RadixBlocks
from kvroute.events.stream import EventStream, StreamStats
from kvroute.events.subscriber import AsyncEventSubscriber, EventSubscriber

__all__ = ["DECODERS", "MEDIUM_GPU", "WIRE_FORMATS", "AllBlocksCleared",
           "AsyncEventSubscriber", "BlockHash", "BlockIndex", "BlockIndexSource",
           "BlockRemoved", "BlockStored", "DecodeStats", "Decoder", "EventBatch",
           "EventPublisher", "EventStream", "EventSubscriber", "IndexStats", "KvEvent",
           "RadixBlocks", "StreamStats", "encode_batch", "make_decoder"]
