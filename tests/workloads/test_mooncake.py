"""Mooncake trace replay: token mapping, slicing, time scaling, laziness, errors."""

import json
from pathlib import Path

import numpy as np
import pytest

from kvroute.errors import ConfigError
from kvroute.workloads import mooncake
from kvroute.workloads.mooncake import (
    MooncakeRecord,
    block_tokens,
    load_mooncake,
    read_mooncake,
    write_mooncake,
)
from kvroute.workloads.request import output_ids

SHARED = Path(__file__).resolve().parents[3] / "shared" / "traces"
SHARED_TRACE = SHARED / "mooncake_synthetic_trace.jsonl"


def _rec(ts, n_in, blocks, n_out=4):
    return {"timestamp": ts, "input_length": n_in, "output_length": n_out, "hash_ids": blocks}


@pytest.fixture
def trace(tmp_path):
    path = tmp_path / "trace.jsonl"
    write_mooncake(path, [_rec(0, 600, [3, 7]), _rec(500, 512, [3], n_out=0),
                          _rec(1500, 1100, [3, 7, 9]), _rec(4000, 10, [11])])
    return path


def test_token_mapping_and_partial_last_block(trace):
    """Block b, position j -> b*512 + j; the last block is cut to input_length."""
    reqs = list(load_mooncake(trace))
    assert np.array_equal(reqs[0].tokens, np.concatenate(
        [3 * 512 + np.arange(512), 7 * 512 + np.arange(88)]))
    assert reqs[0].prompt_len == 600 and reqs[2].prompt_len == 1100
    assert np.array_equal(reqs[2].tokens[:600], reqs[0].tokens)  # shared prefix
    assert reqs[1].output_len == 1 and reqs[0].output_len == 4  # max(1, output_length)
    assert reqs[0].output_tokens is None and output_ids(reqs[0]).max() < 0
    assert [r.rid for r in reqs] == [0, 1, 2, 3] and {r.session for r in reqs} == {-1}


def test_other_block_sizes(tmp_path):
    """block_size is an option: ids map with it and lengths are checked against it."""
    path = tmp_path / "t.jsonl"
    write_mooncake(path, [_rec(0, 6, [2, 5])])
    (r,) = load_mooncake(path, block_size=4)
    assert r.tokens.tolist() == [8, 9, 10, 11, 20, 21]
    assert block_tokens(np.array([1]), 2, 3).tolist() == [3, 4]
    with pytest.raises(ConfigError, match=r"t\.jsonl:1: input_length 6"):
        load_mooncake(path)  # 6 tokens cannot span 2 blocks of 512


def test_arrivals_time_scale_and_rate(trace):
    """arrival = (ts - first ts)/1000 * time_scale; rate sets (n-1)/last arrival."""
    assert [r.arrival for r in load_mooncake(trace)] == [0.0, 0.5, 1.5, 4.0]
    assert [r.arrival for r in load_mooncake(trace, time_scale=0.5)] == [0.0, 0.25, 0.75, 2.0]
    w = load_mooncake(trace, rate=3.0)
    arrivals = [r.arrival for r in w]
    assert arrivals[-1] == pytest.approx(1.0) and w.meta["time_scale"] == pytest.approx(0.25)
    assert {r.arrival for r in load_mooncake(trace, rate=float("inf"))} == {0.0}
    with pytest.raises(ConfigError, match="not both"):
        load_mooncake(trace, rate=2.0, time_scale=2.0)


def test_slicing_and_time_window(trace):
    """start/limit slice the requests; start_time/end_time (s) window the trace clock;
    arrivals restart at 0 and rids at 0 for the selection."""
    w = load_mooncake(trace, start=1, limit=2)
    reqs = list(w)
    assert w.size == 2 and [r.prompt_len for r in reqs] == [512, 1100]
    assert [r.arrival for r in reqs] == [0.0, 1.0] and [r.rid for r in reqs] == [0, 1]
    reqs = list(load_mooncake(trace, start_time=0.5, end_time=4.0))
    assert [r.prompt_len for r in reqs] == [512, 1100]
    with pytest.raises(ConfigError, match="no request left"):
        load_mooncake(trace, start=10)


def test_records_are_sorted_by_timestamp(tmp_path):
    """Out-of-order lines replay in timestamp order."""
    path = tmp_path / "t.jsonl"
    write_mooncake(path, [_rec(2000, 1, [1]), _rec(1000.0, 2, [2])])
    assert [r.prompt_len for r in load_mooncake(path)] == [2, 1]


def test_requests_are_built_lazily_and_replay_equal(trace, monkeypatch):
    """Taking one request builds one token array; iterating twice gives equal requests."""
    calls = []
    real = mooncake.block_tokens

    def counting(*args, **kw):
        calls.append(1)
        return real(*args, **kw)

    monkeypatch.setattr(mooncake, "block_tokens", counting)
    w = load_mooncake(trace)
    assert not calls
    next(iter(w))
    assert len(calls) == 1
    a, b = list(w), list(w)
    assert all(np.array_equal(x.tokens, y.tokens) and x.arrival == y.arrival
               and x.rid == y.rid and x.tokens is not y.tokens for x, y in zip(a, b, strict=True))


def test_write_and_read_round_trip(tmp_path):
    """write_mooncake takes dicts or MooncakeRecords; read_mooncake returns line numbers."""
    path = tmp_path / "t.jsonl"
    recs = [MooncakeRecord(1.0, 5, 2, np.array([4])), _rec(2.5, 513, [4, 6])]
    assert write_mooncake(path, recs) == 2
    first = json.loads(path.read_text().splitlines()[0])
    assert first == {"timestamp": 1, "input_length": 5, "output_length": 2, "hash_ids": [4]}
    back = read_mooncake(path)
    assert [(r.timestamp, r.input_length, r.hash_ids.tolist(), r.line) for r in back] == [
        (1.0, 5, [4], 1), (2.5, 513, [4, 6], 2)]


@pytest.mark.parametrize(("line", "reason"), [
    ("{bad", "bad JSON"),
    ('[1, 2]', "expected a JSON object"),
    ('{"timestamp": 0, "input_length": 5, "hash_ids": [1]}', "missing output_length"),
    ('{"timestamp": "x", "input_length": 5, "output_length": 1, "hash_ids": [1]}',
     "timestamp"),
    ('{"timestamp": 0, "input_length": 0, "output_length": 1, "hash_ids": []}',
     "input_length must be"),
    ('{"timestamp": 0, "input_length": 5, "output_length": 1, "hash_ids": [-1]}',
     "hash_ids"),
    ('{"timestamp": 0, "input_length": 1025, "output_length": 1, "hash_ids": [1, 2]}',
     "does not fit 2 blocks"),
    ('{"timestamp": 0, "input_length": 100, "output_length": 1, "hash_ids": [1, 2]}',
     "does not fit 2 blocks"),
])
def test_parse_errors_name_path_and_line(tmp_path, line, reason):
    """A bad line is a ConfigError with path:line and the reason."""
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps(_rec(0, 5, [1])) + "\n\n" + line + "\n")
    with pytest.raises(ConfigError, match=rf"t\.jsonl:3: .*{reason}"):
        load_mooncake(path)


def test_file_errors(tmp_path):
    """Missing, empty or directory paths and bad options are ConfigErrors."""
    with pytest.raises(ConfigError, match="not found"):
        load_mooncake(tmp_path / "nope.jsonl")
    (tmp_path / "e.jsonl").write_text("\n")
    with pytest.raises(ConfigError, match="empty trace"):
        load_mooncake(tmp_path / "e.jsonl")
    with pytest.raises(ConfigError, match="directory"):
        load_mooncake(tmp_path)
    with pytest.raises(ConfigError, match="block_size"):
        load_mooncake(tmp_path / "e.jsonl", block_size=0)
    with pytest.raises(ConfigError, match="time_scale"):
        load_mooncake(tmp_path / "e.jsonl", time_scale=0)


@pytest.mark.skipif(not SHARED_TRACE.is_file(), reason="../shared/traces is absent")
def test_shared_mooncake_trace_facts():
    """The released synthetic trace: 3,993 requests, mean prompt ~15.3K, block ceiling ~0.64."""
    records = read_mooncake(SHARED_TRACE)
    assert len(records) == 3993
    seen: set[int] = set()
    hits = total = 0
    for r in records:
        for b in r.hash_ids.tolist():
            hits += b in seen
            total += 1
            seen.add(b)
    assert 0.63 < hits / total < 0.65
    w = load_mooncake(SHARED_TRACE, limit=50)
    assert w.size == 50 and w.meta["prompt_tokens"] == sum(r.prompt_len for r in w)
    assert 15_000 < sum(r.input_length for r in records) / len(records) < 15_700


def test_gzip_bom_and_crlf_traces_read_as_the_plain_file(tmp_path, trace):
    """A gzip-compressed trace (by its bytes, not its name), a UTF-8 byte-order mark and
    Windows line endings read as the plain trace; a damaged .gz is a ConfigError."""
    import gzip

    text = trace.read_text()
    want = [(r.timestamp, r.input_length, r.hash_ids.tolist()) for r in read_mooncake(trace)]
    gz = tmp_path / "trace.jsonl.gz"
    gz.write_bytes(gzip.compress(text.encode()))
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode())
    for path in (gz, bom):
        got = [(r.timestamp, r.input_length, r.hash_ids.tolist()) for r in read_mooncake(path)]
        assert got == want
    assert load_mooncake(gz).name == "trace"
    bad = tmp_path / "cut.jsonl.gz"
    bad.write_bytes(gzip.compress(text.encode())[:-12])
    with pytest.raises(ConfigError, match=r"cut\.jsonl\.gz: damaged gzip file"):
        read_mooncake(bad)


def test_hash_ids_beyond_int64_are_a_config_error(tmp_path):
    """A block id numpy cannot hold as int64 names the line instead of overflowing."""
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps(_rec(0, 5, [2**63])) + "\n")
    with pytest.raises(ConfigError, match=r"t\.jsonl:1: hash_ids must be .*2\^63"):
        read_mooncake(path)
    path.write_text(json.dumps(_rec(0, 5, [2**63 - 1])) + "\n")
    assert read_mooncake(path)[0].hash_ids.tolist() == [2**63 - 1]


def test_mistyped_options_are_config_errors(trace):
    """Options from `compare -o` arrive as parsed JSON or raw text: a wrong type names the
    option instead of failing inside the loader."""
    from kvroute.workloads.catalog import build_workload

    with pytest.raises(ConfigError, match="workload mooncake: option limit must be an "
                                          "integer, got '5'"):
        build_workload("mooncake", trace=str(trace), limit="5")
    assert build_workload("mooncake", trace=str(trace), time_scale=2).size == 4


def test_unknown_option_gives_the_output_length_reason_only_for_output_len(trace):
    from kvroute.workloads.catalog import build_workload

    with pytest.raises(ConfigError, match=r"output_len for workload mooncake \(a trace has"):
        build_workload("mooncake", trace=str(trace), output_len=4)
    with pytest.raises(ConfigError, match="groups for workload mooncake; valid"):
        build_workload("mooncake", trace=str(trace), groups=4)


def _chat(chat, parent, ts, n_in, blocks, turn=1):
    return {"chat_id": chat, "parent_chat_id": parent, "timestamp": ts, "input_length": n_in,
            "output_length": 5, "type": "text", "turn": turn, "hash_ids": blocks}


def test_bailian_traces_are_read_in_seconds_with_16_token_blocks_and_conversations(tmp_path):
    """A file whose records have chat ids (Alibaba's Bailian traces): timestamps in
    seconds, 16-token blocks, each request's session its conversation's root (a parent
    absent from the file is a root), numbered by first arrival."""
    path = tmp_path / "qwen.jsonl"
    lines = [_chat(7, -1, 0.5, 40, [1, 2, 3]),
             _chat(9, 7, 3.0, 70, [1, 2, 4, 5, 6], turn=2),
             _chat(4, -1, 1.25, 16, [8]),
             _chat(12, 9, 9.0, 90, [1, 2, 4, 5, 6, 7], turn=3),
             _chat(20, 99, 10.0, 17, [30, 31], turn=4)]  # its parent is not in the file
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    w = load_mooncake(path)
    reqs = list(w)
    assert w.meta["layout"] == "bailian" and w.meta["block_size"] == 16
    assert [r.arrival for r in reqs] == [0.0, 0.75, 2.5, 8.5, 9.5]
    assert [r.session for r in reqs] == [0, 1, 0, 0, 2]
    assert [r.turn for r in reqs] == [1, 1, 2, 3, 4]
    # its whole blocks 1, 2, then the tail its continuation (chat 9) holds: block 4's ids
    assert np.array_equal(reqs[0].tokens, np.concatenate(
        [16 + np.arange(16), 32 + np.arange(16), 64 + np.arange(8)]))
    assert np.array_equal(reqs[2].tokens[:40], reqs[0].tokens)
    assert load_mooncake(path, start_time=1.0, end_time=9.0).size == 2  # seconds, as always
    with pytest.raises(ConfigError, match=r"qwen\.jsonl:1: input_length 40 does not fit 3 "
                                          r"blocks of 512 tokens \(given; every line fits "
                                          r"16-token blocks: pass block size 16\)"):
        read_mooncake(path, block_size=512)


def test_block_size_errors_say_which_sizes_fit(tmp_path):
    """A Mooncake-layout file of 16-token blocks fails at the default 512 with the size
    that fits; a file no one size fits says so."""
    path = tmp_path / "t.jsonl"
    write_mooncake(path, [_rec(0, 32, [1, 2]), _rec(1, 17, [1, 3])])
    with pytest.raises(ConfigError, match=r"t\.jsonl:1: .*\(this layout's default; every "
                                          r"line fits 16-token blocks: pass block size 16\)"):
        read_mooncake(path)
    assert load_mooncake(path, block_size=16).size == 2
    write_mooncake(path, [_rec(0, 32, [1, 2]), _rec(1, 40, [3])])
    with pytest.raises(ConfigError, match="no one block size fits every line"):
        read_mooncake(path)
    path.write_text(json.dumps(_chat(1, -1, 0.0, 5, [1])) + "\n"
                    + json.dumps(_chat([2], 1, 1.0, 5, [1])) + "\n")
    with pytest.raises(ConfigError, match=r"t\.jsonl:2: chat_id must be an integer or a string"):
        read_mooncake(path)


def test_bailian_turns_hold_the_reply_they_continue_and_wait_for_it(tmp_path):
    """A turn's continuation (its first child extending its whole blocks) lends it its
    prompt's tail and its output ids, so the child finds prompt and reply cached; every
    child replayed with its parent names it in ``after``."""
    path = tmp_path / "qwen.jsonl"
    lines = [_chat(1, -1, 0.0, 40, [1, 2, 3]),  # 2 whole blocks, then 8 tokens of block 3
             # the child: the parent's 2 whole blocks, then its own (the parent's tail, the
             # reply, the new input): 40 + 5 output tokens fit in its 70
             _chat(2, 1, 5.0, 70, [1, 2, 7, 8, 9], turn=2),
             _chat(3, 1, 6.0, 20, [1, 4], turn=2),  # a sibling too short to hold the reply
             _chat(4, 9, 7.0, 16, [5])]  # its parent is not in the file
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    parent, child, sibling, orphan = list(load_mooncake(path))
    assert np.array_equal(parent.tokens, child.tokens[:40])
    assert parent.output_tokens is not None and parent.output_len == 5
    assert np.array_equal(parent.output_tokens, child.tokens[40:45])
    assert child.output_tokens is None and sibling.output_tokens is None  # no continuation
    assert [r.after for r in (parent, child, sibling, orphan)] == [-1, 0, 0, -1]
    # a follower's pace is the gap to what it follows on the trace's own clock, whatever
    # the replay's time scale (the starts scale: more users, each at their own pace)
    fast = list(load_mooncake(path, time_scale=0.1))
    assert [r.pace for r in fast] == [0.0, 5.0, 6.0, 0.0]
    assert fast[3].arrival == pytest.approx(0.7)
    assert next(iter(load_mooncake(path, start=1))).after == -1  # its parent: not replayed
    # without chat ids: no continuation, no waiting
    plain = tmp_path / "plain.jsonl"
    write_mooncake(plain, [_rec(0, 400, [1]), _rec(1, 700, [1, 2])])
    assert all(r.after == -1 and r.output_tokens is None for r in load_mooncake(plain))


def test_the_invented_chat_trace_reads_as_a_bailian_trace(tmp_path):
    """benchmarks/chat_trace.py: its rows read as a Bailian trace whose later turns
    continue (and wait for) the earlier ones."""
    from tests.benchmark_scripts import load

    rows = load("chat_trace").conversations(30, seed=3)
    path = tmp_path / "chat.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    w = load_mooncake(path)
    reqs = list(w)
    assert w.meta["layout"] == "bailian" and w.size == len(rows) > 30
    followers = [r for r in reqs if r.after >= 0]
    assert followers and all(reqs[r.after].session == r.session for r in followers)
    for r in followers:  # it starts with the prompt and reply of the turn it follows
        parent = reqs[r.after]
        if parent.output_tokens is not None:
            seq = np.concatenate([parent.tokens, parent.output_tokens])
            assert np.array_equal(r.tokens[:len(seq)], seq)


def test_one_cache_streams_of_a_bailian_trace_store_each_reply(tmp_path):
    """``trace_stream``: a turn with its continuation in the file stores its reply too (in
    blocks: its whole blocks, then the continuation's up to the reply's end), so the
    continuation hits it in a cache that never evicts."""
    from kvroute.cache import RadixCache, make_policy
    from kvroute.cache.ceilings import replay
    from kvroute.workloads.cache_streams import trace_stream

    path = tmp_path / "qwen.jsonl"
    lines = [{**_chat(1, -1, 0.0, 40, [1, 2, 3]), "output_length": 30},  # 40 + 30 tokens
             _chat(2, 1, 5.0, 75, [1, 2, 7, 8, 9], turn=2)]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    blocks = trace_stream(path, "block")
    assert blocks.meta["replies_stored"] == 1 and blocks.inserts is not None
    # its 2 whole blocks, then the continuation's up to 70 // 16 = 4 whole blocks; its
    # partial block 3 is not stored (its content is the continuation's block 7's head)
    assert blocks.inserts[0].tolist() == [1, 2, 7, 8]
    assert blocks.prompts[0].tolist() == [1, 2, 3] and blocks.inserts[1].tolist() == [
        1, 2, 7, 8, 9]
    tokens = trace_stream(path, "token")
    assert tokens.inserts is not None and len(tokens.inserts[0]) == 70
    for stream, hit in ((blocks, 4), (tokens, 70)):
        cache = RadixCache(10_000, make_policy("lru"))
        assert replay(cache, stream.prompts, stream.inserts).hit_tokens == hit
    plain = tmp_path / "plain.jsonl"
    write_mooncake(plain, [_rec(0, 400, [1]), _rec(1, 700, [1, 2])])
    assert trace_stream(plain).inserts is None
