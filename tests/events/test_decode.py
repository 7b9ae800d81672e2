"""Decoders against payloads built from the engines' published schemas, and the encoders
against the same schemas."""

import pytest

pytest.importorskip("zmq")
pytest.importorskip("msgspec")

import msgspec

from kvroute.errors import ConfigError
from kvroute.events import (
    AllBlocksCleared,
    BlockRemoved,
    BlockStored,
    EventBatch,
    encode_batch,
    make_decoder,
)

from .fixtures import SGL, V023, V026, V09, encode, vllm_026_captured

TOKENS = [1, 2, 3, 4, 5, 6]


def test_vllm_09_positional():
    """vLLM 0.9's positional batch decodes; missing medium/group become GPU/0."""
    payload = encode(V09.Batch(12.5, [V09.Stored([7, 8, 9], None, TOKENS, 2, None),
                                      V09.Removed([8]), V09.Cleared()]))
    assert make_decoder("vllm").decode(payload) == EventBatch(12.5, (
        BlockStored((7, 8, 9), None, tuple(TOKENS), 2),
        BlockRemoved((8,)),
        AllBlocksCleared(),
    ), None, 0)


def test_vllm_023_positional_every_field():
    """vLLM's last positional schema: LoRA, medium, extra keys, group, spec kind, rank."""
    payload = encode(V023.Batch(3.0, [
        V023.Stored([b"\x01" * 32, b"\x02" * 32], b"\x00" * 32, [9, 9, 8, 8], 2, 3, "CPU",
                    "ad", [("ad", "img-1"), ("ad",)], 1, "full_attention", None),
        V023.Removed([b"\x01" * 32], "CPU", 1),
    ], data_parallel_rank=2))
    batch = make_decoder("vllm").decode(payload)
    assert batch == EventBatch(3.0, (
        BlockStored((b"\x01" * 32, b"\x02" * 32), b"\x00" * 32, (9, 9, 8, 8), 2, lora_id=3,
                    lora_name="ad", medium="CPU", group_idx=1,
                    extra_keys=(("ad", "img-1"), ("ad",)),
                    kv_cache_spec_kind="full_attention"),
        BlockRemoved((b"\x01" * 32,), "CPU", 1),
    ), 2, 0)


def test_vllm_026_named_fields():
    """vLLM 0.26's named-field events (tag under "type"), with the optional fields left out."""
    payload = encode(V026.Batch(4.0, [
        V026.Stored([11, 12], 10, [5, 6, 7, 8], 2, None, "GPU", None),
        V026.Removed([11], "GPU"),
        V026.Cleared(),
    ], data_parallel_rank=0))
    assert make_decoder("vllm").decode(payload) == EventBatch(4.0, (
        BlockStored((11, 12), 10, (5, 6, 7, 8), 2),
        BlockRemoved((11,)),
        AllBlocksCleared(),
    ), 0, 0)


def test_vllm_026_captured_shape():
    """A batch shaped exactly as a vLLM 0.26.0 publisher sent it decodes, u64 hash intact."""
    batch = make_decoder("vllm").decode(vllm_026_captured())
    assert batch is not None and batch.dp_rank == 0 and batch.skipped == 0
    (event,) = batch.events
    assert isinstance(event, BlockStored)
    assert event.block_hashes == (15760518052499183552,)
    assert len(event.token_ids) == 16 and event.block_size == 16
    assert event.extra_keys == (None,) and event.kv_cache_spec_kind == "full_attention"


def test_positional_and_named_events_mixed_in_one_batch():
    """Each event is decoded by its own form, so a mixed batch decodes whole."""
    payload = encode([1.0, [V023.Stored([1], None, [4, 4], 2, None, "GPU", None),
                            {"type": "BlockRemoved", "block_hashes": [1], "medium": "GPU"}]])
    batch = make_decoder("vllm").decode(payload)
    assert batch is not None
    assert batch.events == (BlockStored((1,), None, (4, 4), 2), BlockRemoved((1,)))


def test_batch_as_a_map():
    """A batch sent as a named-field map (ts, events, data_parallel_rank) decodes too."""
    payload = encode({"ts": 2.0, "events": [["AllBlocksCleared"]], "data_parallel_rank": 1})
    assert make_decoder("vllm").decode(payload) == EventBatch(2.0, (AllBlocksCleared(),), 1)


def test_sglang_positional():
    """SGLang's batch ([ts, events, attn_dp_rank]) with vLLM 0.9's event layout."""
    payload = encode(SGL.Batch(6.0, [SGL.Stored([-5], 77, [1, 2, 3], 3, None),
                                     SGL.Removed([-5])], attn_dp_rank=1))
    assert make_decoder("sglang").decode(payload) == EventBatch(6.0, (
        BlockStored((-5,), 77, (1, 2, 3), 3), BlockRemoved((-5,))), 1)


def test_sglang_ignores_its_own_trailing_fields():
    """SGLang's fields after medium differ from vLLM's; the sglang decoder ignores them."""
    payload = encode([1.0, [["BlockStored", [1], None, [4, 4], 2, None, "GPU",
                             {"cache_salt": "tenant-a"}]]])
    batch = make_decoder("sglang").decode(payload)
    assert batch is not None and batch.events == (BlockStored((1,), None, (4, 4), 2),)
    # the same bytes are not a valid vLLM event: index 7 is vLLM's lora_name (a string)
    vllm = make_decoder("vllm")
    assert vllm.decode(payload) == EventBatch(1.0, (), None, 1)
    assert vllm.stats.errors == {"bad_block_stored": 1}


def test_errors_counted_by_reason_and_skipped():
    """Bad events are skipped and counted by reason; the good ones around them decode."""
    good = ["BlockRemoved", [3]]
    payload = encode([1.0, [
        good,
        ["BlockMoved", [3], "CPU"],                             # unknown kind
        {"type": "BlockEvicted"},                               # unknown kind, map form
        ["BlockStored", ["x"], None, [1], 1, None],             # hash of the wrong type
        ["BlockStored", [1, 2], None, [1, 2, 3], 2, None],      # 3 tokens for 2 blocks of 2
        ["BlockStored", [1], None, [], 0, None],                # block size 0
        {"type": "BlockStored", "block_hashes": [1], "token_ids": [1], "block_size": 1,
         "extra_keys": [None, None]},                           # 2 extra keys for 1 block
        {"block_hashes": [1]},                                  # no tag
        ["BlockRemoved"],                                       # missing field
        7,                                                      # not an event
        good,
    ]])
    dec = make_decoder("vllm")
    batch = dec.decode(payload)
    assert batch == EventBatch(1.0, (BlockRemoved((3,)), BlockRemoved((3,))), None, 7)
    assert dec.stats.errors == {"unknown_kind": 2, "bad_block_stored": 1, "token_count": 1,
                                "block_size": 1, "extra_keys": 1, "event": 2,
                                "bad_block_removed": 1}
    assert dec.stats.unknown_kinds == {"BlockMoved": 1, "BlockEvicted": 1}
    assert dec.stats.events == {"BlockRemoved": 2} and dec.stats.batches == 1


@pytest.mark.parametrize("payload", [b"", b"\xc1", b"garbage", encode({"ts": 1.0}),
                                     encode(["not a float", []]), encode([1.0, 5])])
def test_garbage_payload_is_none(payload):
    """A payload that is not a batch gives None and one 'batch' error, never an exception."""
    dec = make_decoder("vllm")
    assert dec.decode(payload) is None
    assert dec.stats.errors == {"batch": 1} and dec.stats.batches == 0


def test_stored_without_hashes_is_a_no_op():
    """vLLM can emit a BlockStored whose blocks were all skipped: a valid, empty event."""
    batch = make_decoder("vllm").decode(encode([1.0, [["BlockStored", [], 9, [1, 2], 2,
                                                       None]]]))
    assert batch == EventBatch(1.0, (BlockStored((), 9, (), 2),))


def test_unknown_decoder_name():
    """Only vllm and sglang are known; the error lists them."""
    with pytest.raises(ConfigError, match="vllm, sglang"):
        make_decoder("trtllm")


EVENTS = (BlockStored((21, 22), 20, (1, 2, 3, 4), 2, lora_id=1, lora_name="ad",
                      extra_keys=(("ad",), ("ad", "img")), kv_cache_spec_kind="full"),
          BlockRemoved((21,)), AllBlocksCleared())


@pytest.mark.parametrize("wire, batch_type, stored, removed", [
    ("vllm", V026.Batch, V026.Stored, V026.Removed),
    ("vllm-positional", V023.Batch, V023.Stored, V023.Removed),
    ("sglang", SGL.Batch, SGL.Stored, SGL.Removed),
])
def test_encoder_output_matches_the_published_schema(wire, batch_type, stored, removed):
    """What kvroute publishes decodes with the engine's own schema types."""
    payload = encode_batch(EventBatch(5.0, EVENTS, 0), wire)
    cleared = {V026.Stored: V026.Cleared, V023.Stored: V023.Cleared}.get(stored, SGL.Cleared)
    typed = msgspec.msgpack.decode(payload, type=batch_type)
    events = [msgspec.convert(e, stored | removed | cleared) for e in typed.events]
    assert [type(e) for e in events] == [stored, removed, cleared]
    assert list(events[0].token_ids) == [1, 2, 3, 4] and events[0].parent_block_hash == 20


@pytest.mark.parametrize("wire, engine", [("vllm", "vllm"), ("vllm-positional", "vllm"),
                                          ("sglang", "sglang")])
def test_round_trip(wire, engine):
    """encode then decode gives the events back (SGLang drops what it has no field for)."""
    batch = make_decoder(engine).decode(encode_batch(EventBatch(5.0, EVENTS, 3), wire))
    if engine == "sglang":
        expected = (BlockStored((21, 22), 20, (1, 2, 3, 4), 2, lora_id=1),
                    BlockRemoved((21,)), AllBlocksCleared())
    else:
        expected = EVENTS
    assert batch == EventBatch(5.0, expected, 3)
