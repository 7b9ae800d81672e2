"""The engines' KV-event wire schemas, as msgspec types for validating decoding.

Written from the published schemas (field names and order are the contract; the code is
kvroute's). Every message is msgpack. The batch is ``[ts, events, dp_rank]`` (positional;
the rank is left out when unset) in every engine version seen; a map form of the batch
(``{"ts", "events", "data_parallel_rank"}``) is accepted too. Each event is tagged by
its kind name, in one of two forms:

* **positional** (``array_like``): ``[kind, field0, field1, ...]``, trailing fields that
  hold their default left out. vLLM until PR #42892 (v0.23 and earlier) and SGLang.
* **named-field map**: ``{"type": kind, "field": value, ...}``. vLLM after PR #42892
  (0.26 and later; the order of keys is not part of the contract), and SGLang
  branches that followed it.

vLLM's positional fields were only ever appended, in this order: ``block_hashes,
parent_block_hash, token_ids, block_size, lora_id`` (PR #16750), ``medium`` (#19737),
``lora_name`` (#27577), ``extra_keys`` (#33304), ``group_idx`` (#37688),
``kv_cache_spec_kind, kv_cache_spec_sliding_window`` (#40984); ``BlockRemoved`` is
``block_hashes, medium, group_idx``. SGLang's positional ``BlockStored`` agrees up to
``medium`` and carries SGLang-specific fields after it, which are ignored here, so a
positional SGLang stream cannot be told from a vLLM one by its shape: the engine is named.

Unknown trailing positional fields and unknown map keys are ignored (forward
compatibility); a field of the wrong type rejects the event.
"""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = ["KINDS", "BatchArray", "BatchMap", "ClearedArray", "ClearedMap", "RemovedMap",
           "SglangRemovedArray", "SglangStoredArray", "StoredMap", "VllmRemovedArray",
           "VllmStoredArray"]

KINDS = ("BlockStored", "BlockRemoved", "AllBlocksCleared")

WireHash = int | bytes


class BatchArray(msgspec.Struct, array_like=True, gc=False):
    """``[ts, events, dp_rank]`` (vLLM's ``data_parallel_rank``, SGLang's
    ``attn_dp_rank``)."""

    ts: float
    events: list[msgspec.Raw]
    dp_rank: int | None = None


class BatchMap(msgspec.Struct, gc=False):
    """The batch as a named-field map."""

    ts: float
    events: list[msgspec.Raw]
    data_parallel_rank: int | None = None
    attn_dp_rank: int | None = None


# --- positional events -------------------------------------------------------------


class VllmStoredArray(msgspec.Struct, array_like=True, gc=False, tag="BlockStored"):
    block_hashes: list[WireHash]
    parent_block_hash: WireHash | None
    token_ids: tuple[int, ...]
    block_size: int
    lora_id: int | None = None
    medium: str | None = None
    lora_name: str | None = None
    extra_keys: list[Any] | None = None
    group_idx: int | None = None
    kv_cache_spec_kind: str | None = None
    kv_cache_spec_sliding_window: int | None = None


class VllmRemovedArray(msgspec.Struct, array_like=True, gc=False, tag="BlockRemoved"):
    block_hashes: list[WireHash]
    medium: str | None = None
    group_idx: int | None = None


class SglangStoredArray(msgspec.Struct, array_like=True, gc=False, tag="BlockStored"):
    block_hashes: list[WireHash]
    parent_block_hash: WireHash | None
    token_ids: tuple[int, ...]
    block_size: int
    lora_id: int | None = None
    medium: str | None = None


class SglangRemovedArray(msgspec.Struct, array_like=True, gc=False, tag="BlockRemoved"):
    block_hashes: list[WireHash]
    medium: str | None = None


class ClearedArray(msgspec.Struct, array_like=True, gc=False, tag="AllBlocksCleared"):
    pass


# --- named-field events ------------------------------------------------------------


class StoredMap(msgspec.Struct, gc=False, tag="BlockStored"):
    block_hashes: list[WireHash]
    token_ids: tuple[int, ...]
    block_size: int
    parent_block_hash: WireHash | None = None
    lora_id: int | None = None
    medium: str | None = None
    lora_name: str | None = None
    extra_keys: list[Any] | None = None
    group_idx: int | None = None
    kv_cache_spec_kind: str | None = None
    kv_cache_spec_sliding_window: int | None = None


class RemovedMap(msgspec.Struct, gc=False, tag="BlockRemoved"):
    block_hashes: list[WireHash]
    medium: str | None = None
    group_idx: int | None = None


class ClearedMap(msgspec.Struct, gc=False, tag="AllBlocksCleared"):
    pass
