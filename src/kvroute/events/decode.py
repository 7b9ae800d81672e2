"""Decoders: one engine's msgpack payloads -> kvroute's :class:`EventBatch`.

``make_decoder("vllm")`` takes vLLM's positional events (v0.23 and earlier) and its
named-field maps (0.26 and later) in the same stream, message by message and event by
event; ``make_decoder("sglang")`` takes SGLang's positional events (and maps, for SGLang
branches that adopted them). The engine is named rather than detected: a positional
SGLang batch has exactly the shape of a positional vLLM one (:mod:`kvroute.events.schema`).

Contract:

* ``decode(payload)`` never raises on bad input: it returns ``None`` for a payload that is
  not a batch, and skips an event it cannot use, counting both in :attr:`Decoder.stats`
  by reason:

  - ``batch``: the payload is not a msgpack batch ``[ts, events, rank?]``;
  - ``event``: an event is neither a tagged array nor a tagged map;
  - ``unknown_kind``: a well-formed event of a kind kvroute does not know (also counted
    by name in ``unknown_kinds``); it is not counted in the batch's ``skipped``;
  - ``bad_block_stored`` / ``bad_block_removed`` / ``bad_all_blocks_cleared``: a field is
    missing or of the wrong type;
  - ``block_size`` (not positive), ``token_count`` (``token_ids`` is not
    ``len(block_hashes) * block_size`` long), ``extra_keys`` (not one entry per block).

  Skipped events of a known kind are counted in the batch's ``skipped`` so a consumer
  knows its view lost something. A ``BlockStored`` without hashes is a valid no-op.
* ``stats.events`` counts decoded events by kind, ``stats.batches`` decoded batches.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from kvroute.errors import UnknownNameError
from kvroute.events import schema as s
from kvroute.events.model import (
    MEDIUM_GPU,
    AllBlocksCleared,
    BlockRemoved,
    BlockStored,
    EventBatch,
    KvEvent,
)

__all__ = ["DECODERS", "DecodeStats", "Decoder", "make_decoder"]

DECODERS = ("vllm", "sglang")

_BAD = {"BlockStored": "bad_block_stored", "BlockRemoved": "bad_block_removed",
        "AllBlocksCleared": "bad_all_blocks_cleared"}
_DecodeFailure = (msgspec.ValidationError, msgspec.DecodeError)


@dataclass
class DecodeStats:
    """What a decoder has seen: batches decoded, events by kind, errors by reason."""

    batches: int = 0
    events: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    unknown_kinds: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {"batches": self.batches, "events": dict(self.events),
                "errors": dict(self.errors), "unknown_kinds": dict(self.unknown_kinds)}


def _is_map(first: int) -> bool:
    return 0x80 <= first <= 0x8F or first in (0xDE, 0xDF)


def _is_array(first: int) -> bool:
    return 0x90 <= first <= 0x9F or first in (0xDC, 0xDD)


def _freeze(value: Any) -> Hashable:
    """Lists (and maps) from msgpack as nested tuples, so extra keys can key a dict."""
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, dict):
        return tuple((_freeze(k), _freeze(v)) for k, v in value.items())
    scalar: Hashable = value
    return scalar


class Decoder:
    """Decodes one engine's payloads; keep one per stream (its counters are per stream)."""

    def __init__(self, name: str, array_types: tuple[type, type]) -> None:
        self.name = name
        self.stats = DecodeStats()
        self._skipped = 0  # events of a known kind skipped in the batch being decoded
        stored, removed = array_types
        self._array = msgspec.msgpack.Decoder(stored | removed | s.ClearedArray)
        self._map = msgspec.msgpack.Decoder(s.StoredMap | s.RemovedMap | s.ClearedMap)
        self._batch_array = msgspec.msgpack.Decoder(s.BatchArray)
        self._batch_map = msgspec.msgpack.Decoder(s.BatchMap)

    def decode(self, payload: bytes) -> EventBatch | None:
        """The batch in ``payload``, or ``None`` (counted) when it is not one."""
        try:
            if payload and _is_map(payload[0]):
                m = self._batch_map.decode(payload)
                ts, raws = m.ts, m.events
                rank = m.data_parallel_rank if m.data_parallel_rank is not None \
                    else m.attn_dp_rank
            else:
                a = self._batch_array.decode(payload)
                ts, raws, rank = a.ts, a.events, a.dp_rank
        except _DecodeFailure:
            self.stats.errors["batch"] += 1
            return None
        events: list[KvEvent] = []
        self._skipped = 0
        counts = self.stats.events
        for raw in raws:
            event = self._event(raw)
            if event is not None:
                events.append(event)
                counts[type(event).__name__] += 1
        self.stats.batches += 1
        return EventBatch(ts, tuple(events), rank, self._skipped)

    # ------------------------------------------------------------------ one event
    def _event(self, raw: msgspec.Raw) -> KvEvent | None:
        """The event, or ``None`` (counted; ``_skipped`` too unless the kind is unknown)."""
        view = memoryview(raw)
        first = view[0] if len(view) else -1
        try:
            if _is_array(first):
                wire = self._array.decode(view)
            elif _is_map(first):
                wire = self._map.decode(view)
            else:
                self._bad("event")
                return None
        except _DecodeFailure:
            self._classify(view)
            return None
        if isinstance(wire, s.ClearedArray | s.ClearedMap):
            return AllBlocksCleared()
        if isinstance(wire, s.VllmRemovedArray | s.SglangRemovedArray | s.RemovedMap):
            return BlockRemoved(tuple(wire.block_hashes), wire.medium or MEDIUM_GPU,
                                getattr(wire, "group_idx", None) or 0)
        return self._stored(wire)

    def _bad(self, reason: str) -> None:
        self.stats.errors[reason] += 1
        self._skipped += 1

    def _classify(self, view: memoryview) -> None:
        """Why a tagged event failed typed decoding: an unknown kind or a bad field."""
        try:
            obj = msgspec.msgpack.decode(view)
        except _DecodeFailure:
            obj = None
        tag = None
        if isinstance(obj, list) and obj:
            tag = obj[0]
        elif isinstance(obj, dict):
            tag = obj.get("type")
        if isinstance(tag, str) and tag not in s.KINDS:
            self.stats.errors["unknown_kind"] += 1
            self.stats.unknown_kinds[tag] += 1
            return
        self._bad(_BAD.get(tag, "event") if isinstance(tag, str) else "event")

    def _stored(self, w: Any) -> BlockStored | None:
        n = len(w.block_hashes)
        size = w.block_size
        if size <= 0:
            self._bad("block_size")
            return None
        tokens = w.token_ids
        if n == 0:
            tokens = ()
        elif len(tokens) != n * size:
            self._bad("token_count")
            return None
        extras = getattr(w, "extra_keys", None)
        frozen: tuple[Hashable | None, ...] | None = None
        if extras is not None:
            if len(extras) != n:
                self._bad("extra_keys")
                return None
            frozen = tuple(None if e is None else _freeze(e) for e in extras)
        return BlockStored(
            tuple(w.block_hashes), w.parent_block_hash, tokens, size, w.lora_id,
            getattr(w, "lora_name", None), w.medium or MEDIUM_GPU,
            getattr(w, "group_idx", None) or 0, frozen,
            getattr(w, "kv_cache_spec_kind", None),
            getattr(w, "kv_cache_spec_sliding_window", None))


_ARRAY_TYPES: dict[str, tuple[type, type]] = {
    "vllm": (s.VllmStoredArray, s.VllmRemovedArray),
    "sglang": (s.SglangStoredArray, s.SglangRemovedArray),
}


def make_decoder(engine: str) -> Decoder:
    """A fresh decoder for ``engine`` (``vllm`` or ``sglang``)."""
    try:
        return Decoder(engine, _ARRAY_TYPES[engine])
    except KeyError:
        raise UnknownNameError(
            f"unknown KV-event format {engine!r}; known: {', '.join(DECODERS)}") from None
