"""Raw payloads built with msgspec from the engines' published KV-event schemas.

Each schema is written here from the engine's published field list (not imported from
the engine, not produced by kvroute's encoder), so the decoders are checked against what
the engines put on the wire:

* ``V09``: vLLM's original schema (vllm-project/vllm#16750, vLLM 0.9): positional,
  ``BlockStored[hashes, parent, tokens, block_size, lora_id]``, ``BlockRemoved[hashes]``,
  batch ``[ts, events]``.
* ``V023``: vLLM's last positional schema (v0.23 and earlier, before #42892): every field
  through ``kv_cache_spec_sliding_window`` (#40984), batch ``[ts, events,
  data_parallel_rank]``.
* ``V026``: vLLM 0.26 (after #42892): the same fields, each event a named-field map with
  ``"type"``; the batch stays positional.
* ``SGL``: SGLang (``sglang/srt/disaggregation/kv_events.py``, 0.4.x-0.5.x): positional,
  vLLM 0.9's events, batch ``[ts, events, attn_dp_rank]``.
* :func:`vllm_026_captured`: a batch with the exact shape of one captured from a vLLM
  0.26.0 publisher (quoted in volcano-sh/kthena#1535), built from plain dicts.
"""

from __future__ import annotations

from typing import Any

import msgspec

_enc = msgspec.msgpack.Encoder()


def encode(obj: Any) -> bytes:
    return _enc.encode(obj)


class V09:
    class Batch(msgspec.Struct, array_like=True, omit_defaults=True):
        ts: float
        events: list[Any]

    class Stored(msgspec.Struct, array_like=True, omit_defaults=True, tag="BlockStored"):
        block_hashes: list[int]
        parent_block_hash: int | None
        token_ids: list[int]
        block_size: int
        lora_id: int | None

    class Removed(msgspec.Struct, array_like=True, omit_defaults=True, tag="BlockRemoved"):
        block_hashes: list[int]

    class Cleared(msgspec.Struct, array_like=True, omit_defaults=True,
                  tag="AllBlocksCleared"):
        pass


class V023:
    class Batch(msgspec.Struct, array_like=True, omit_defaults=True):
        ts: float
        events: list[Any]
        data_parallel_rank: int | None = None

    class Stored(msgspec.Struct, array_like=True, omit_defaults=True, tag="BlockStored"):
        block_hashes: list[int | bytes]
        parent_block_hash: int | bytes | None
        token_ids: list[int]
        block_size: int
        lora_id: int | None
        medium: str | None
        lora_name: str | None
        extra_keys: list[tuple[Any, ...] | None] | None = None
        group_idx: int | None = None
        kv_cache_spec_kind: str | None = None
        kv_cache_spec_sliding_window: int | None = None

    class Removed(msgspec.Struct, array_like=True, omit_defaults=True, tag="BlockRemoved"):
        block_hashes: list[int | bytes]
        medium: str | None
        group_idx: int | None = None

    class Cleared(msgspec.Struct, array_like=True, omit_defaults=True,
                  tag="AllBlocksCleared"):
        pass


class V026:
    Batch = V023.Batch

    class Stored(msgspec.Struct, omit_defaults=True, tag="BlockStored"):
        block_hashes: list[int | bytes]
        parent_block_hash: int | bytes | None
        token_ids: list[int]
        block_size: int
        lora_id: int | None
        medium: str | None
        lora_name: str | None
        extra_keys: list[tuple[Any, ...] | None] | None = None
        group_idx: int | None = None
        kv_cache_spec_kind: str | None = None
        kv_cache_spec_sliding_window: int | None = None

    class Removed(msgspec.Struct, omit_defaults=True, tag="BlockRemoved"):
        block_hashes: list[int | bytes]
        medium: str | None
        group_idx: int | None = None

    class Cleared(msgspec.Struct, omit_defaults=True, tag="AllBlocksCleared"):
        pass


class SGL:
    class Batch(msgspec.Struct, array_like=True, omit_defaults=True):
        ts: float
        events: list[Any]
        attn_dp_rank: int | None = None

    Stored = V09.Stored
    Removed = V09.Removed
    Cleared = V09.Cleared


def vllm_026_captured() -> bytes:
    """One BlockStored of 16 Qwen3 tokens, shaped as a vLLM 0.26.0 publisher sent it."""
    return encode([1789095808.8378847, [{
        "type": "BlockStored", "block_hashes": [15760518052499183552],
        "parent_block_hash": None,
        "token_ids": [151644, 872, 198, 9064, 374, 279, 6722, 315, 5616, 30, 151645, 198,
                      151644, 77091, 198, 151667],
        "block_size": 16, "lora_id": None, "medium": "GPU", "lora_name": None,
        "extra_keys": [None], "group_idx": 0, "kv_cache_spec_kind": "full_attention"}], 0])
