"""kvroute's own KV-cache events: engine-neutral, frozen, decoded from any supported wire.

Contract:

* :class:`BlockStored` says the engine now holds ``len(block_hashes)`` blocks that chain
  from ``parent_block_hash`` (``None``: the first block of a sequence), block ``i``
  holding ``token_ids[i * block_size:(i + 1) * block_size]``. Decoders only build events
  where ``len(token_ids) == len(block_hashes) * block_size``.
* :class:`BlockRemoved` says the engine evicted one copy of each named block. An engine
  may hold several copies of one hash (vLLM does not de-duplicate blocks): every copy is
  stored and removed by its own event.
* :class:`AllBlocksCleared` says the engine holds nothing any more (every medium, group).
* ``medium`` is ``"GPU"`` and ``group_idx`` is 0 where the wire left them out (engines
  that predate those fields had one GPU pool and one group).
* Block hashes are opaque: ``int`` (vLLM's default, SGLang) or ``bytes`` (vLLM with
  byte hashes). kvroute never recomputes them.
* ``extra_keys`` is, where the engine sends it, one entry per block: ``None`` or a tuple
  of the other inputs of that block's hash (LoRA name, multimodal ids, cache salt), with
  nested lists frozen to tuples.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import TypeAlias

__all__ = ["MEDIUM_GPU", "AllBlocksCleared", "BlockHash", "BlockRemoved", "BlockStored",
           "EventBatch", "KvEvent", "event_kind"]

BlockHash: TypeAlias = int | bytes
MEDIUM_GPU = "GPU"


@dataclass(frozen=True, slots=True)
class BlockStored:
    """Blocks the engine now holds (see the module docstring for the layout)."""

    block_hashes: tuple[BlockHash, ...]
    parent_block_hash: BlockHash | None
    token_ids: tuple[int, ...]
    block_size: int
    lora_id: int | None = None
    lora_name: str | None = None
    medium: str = MEDIUM_GPU
    group_idx: int = 0
    extra_keys: tuple[Hashable | None, ...] | None = None
    kv_cache_spec_kind: str | None = None
    kv_cache_spec_sliding_window: int | None = None

    @property
    def lora(self) -> str | int | None:
        """The adapter the blocks belong to: its name, else its id, else ``None``."""
        return self.lora_name if self.lora_name is not None else self.lora_id


@dataclass(frozen=True, slots=True)
class BlockRemoved:
    """One copy of each named block left the engine's cache."""

    block_hashes: tuple[BlockHash, ...]
    medium: str = MEDIUM_GPU
    group_idx: int = 0


@dataclass(frozen=True, slots=True)
class AllBlocksCleared:
    """The engine's cache is empty (a reset, or a restart the subscriber detected)."""


KvEvent: TypeAlias = BlockStored | BlockRemoved | AllBlocksCleared


@dataclass(frozen=True, slots=True)
class EventBatch:
    """One published message: the engine's timestamp (seconds since the epoch), its events
    in order, the data-parallel rank where the wire carries one, and how many events of a
    known kind the decoder had to skip as malformed (the batch is then incomplete)."""

    ts: float
    events: tuple[KvEvent, ...]
    dp_rank: int | None = None
    skipped: int = 0


def event_kind(event: KvEvent) -> str:
    """The wire name of an event's kind: ``BlockStored``, ``BlockRemoved`` or
    ``AllBlocksCleared``."""
    return type(event).__name__
