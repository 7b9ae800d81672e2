"""Encoders: kvroute's events -> an engine's msgpack payload (for the test publisher and
the emulated worker).

Wire formats (:data:`WIRE_FORMATS`):

* ``vllm``: vLLM 0.26 and later. Batch ``[ts, events, data_parallel_rank]``; each event
  a named-field map ``{"type": kind, ...}`` with every field vLLM always sends
  (``block_hashes, parent_block_hash, token_ids, block_size, lora_id, medium,
  lora_name``; ``BlockRemoved``: ``block_hashes, medium``) plus ``group_idx`` and those
  of ``extra_keys, kv_cache_spec_kind, kv_cache_spec_sliding_window`` that are set.
* ``vllm-positional``: vLLM's last positional schema (before PR #42892): the same fields
  as arrays ``[kind, block_hashes, parent_block_hash, token_ids, block_size, lora_id,
  medium, lora_name, extra_keys, group_idx, kv_cache_spec_kind,
  kv_cache_spec_sliding_window]``, trailing unset fields left out as msgspec's
  ``omit_defaults`` does; ``BlockRemoved``: ``[kind, block_hashes, medium, group_idx]``.
* ``sglang``: SGLang's positional schema: batch ``[ts, events, attn_dp_rank]``,
  ``[kind, block_hashes, parent_block_hash, token_ids, block_size, lora_id]`` and
  ``[kind, block_hashes]``, with ``medium`` appended only when it is not ``GPU``. SGLang
  has no LoRA name, extra keys or groups: those are dropped.

The rank is left out of the batch when it is ``None``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from kvroute.errors import UnknownNameError
from kvroute.events.model import (
    MEDIUM_GPU,
    AllBlocksCleared,
    BlockRemoved,
    BlockStored,
    EventBatch,
    KvEvent,
)

__all__ = ["WIRE_FORMATS", "encode_batch", "encode_event"]

_encoder = msgspec.msgpack.Encoder()


def _vllm_map(e: KvEvent) -> Any:
    if isinstance(e, BlockStored):
        out: dict[str, Any] = {
            "type": "BlockStored", "block_hashes": list(e.block_hashes),
            "parent_block_hash": e.parent_block_hash, "token_ids": list(e.token_ids),
            "block_size": e.block_size, "lora_id": e.lora_id, "medium": e.medium,
            "lora_name": e.lora_name}
        if e.extra_keys is not None:
            out["extra_keys"] = list(e.extra_keys)
        out["group_idx"] = e.group_idx
        if e.kv_cache_spec_kind is not None:
            out["kv_cache_spec_kind"] = e.kv_cache_spec_kind
        if e.kv_cache_spec_sliding_window is not None:
            out["kv_cache_spec_sliding_window"] = e.kv_cache_spec_sliding_window
        return out
    if isinstance(e, BlockRemoved):
        return {"type": "BlockRemoved", "block_hashes": list(e.block_hashes),
                "medium": e.medium, "group_idx": e.group_idx}
    return {"type": "AllBlocksCleared"}


def _trim(fields: list[Any], required: int) -> list[Any]:
    """Drop trailing ``None`` fields past the first ``required`` (omit_defaults)."""
    end = len(fields)
    while end > required and fields[end - 1] is None:
        end -= 1
    return fields[:end]


def _vllm_positional(e: KvEvent) -> Any:
    if isinstance(e, BlockStored):
        return _trim(["BlockStored", list(e.block_hashes), e.parent_block_hash,
                      list(e.token_ids), e.block_size, e.lora_id, e.medium, e.lora_name,
                      None if e.extra_keys is None else list(e.extra_keys), e.group_idx,
                      e.kv_cache_spec_kind, e.kv_cache_spec_sliding_window], 8)
    if isinstance(e, BlockRemoved):
        return ["BlockRemoved", list(e.block_hashes), e.medium, e.group_idx]
    return ["AllBlocksCleared"]


def _sglang(e: KvEvent) -> Any:
    medium = [] if isinstance(e, AllBlocksCleared) or e.medium == MEDIUM_GPU else [e.medium]
    if isinstance(e, BlockStored):
        return ["BlockStored", list(e.block_hashes), e.parent_block_hash,
                list(e.token_ids), e.block_size, e.lora_id, *medium]
    if isinstance(e, BlockRemoved):
        return ["BlockRemoved", list(e.block_hashes), *medium]
    return ["AllBlocksCleared"]


_FORMATS: dict[str, Callable[[KvEvent], Any]] = {
    "vllm": _vllm_map, "vllm-positional": _vllm_positional, "sglang": _sglang}
WIRE_FORMATS = tuple(_FORMATS)


def _format(wire: str) -> Callable[[KvEvent], Any]:
    try:
        return _FORMATS[wire]
    except KeyError:
        raise UnknownNameError(f"unknown KV-event wire format {wire!r}; known: "
                               f"{', '.join(WIRE_FORMATS)}") from None


def encode_event(event: KvEvent, wire: str) -> Any:
    """The msgpack-ready form (lists, maps) of one event in ``wire``."""
    return _format(wire)(event)


def encode_batch(batch: EventBatch, wire: str = "vllm") -> bytes:
    """The payload of ``batch`` in ``wire`` (``skipped`` is not on the wire)."""
    fmt = _format(wire)
    body: list[Any] = [batch.ts, [fmt(e) for e in batch.events]]
    if batch.dp_rank is not None:
        body.append(batch.dp_rank)
    return _encoder.encode(body)
