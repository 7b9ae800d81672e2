"""EventStream driven step by step, no sockets: ordering, gaps, replays, restarts."""

import pytest

pytest.importorskip("zmq")
pytest.importorskip("msgspec")

from kvroute.errors import IntegrityError
from kvroute.events import (
    AllBlocksCleared,
    BlockRemoved,
    BlockStored,
    EventBatch,
    EventStream,
    encode_batch,
    make_decoder,
)
from kvroute.events.wire import END_OF_REPLAY, pack_seq

from .fixtures import encode


def ev(seq):
    """The one event batch ``seq`` carries in these tests."""
    return BlockStored((seq,), None, (seq, seq), 2)


def payload(seq, events=None, ts=100.0):
    return encode_batch(EventBatch(ts, (ev(seq),) if events is None else tuple(events)))


def live(seq, **kw):
    return [b"", pack_seq(seq), payload(seq, **kw)]


def answer(seq):
    return [pack_seq(seq), payload(seq)]


END = [END_OF_REPLAY, b""]


def started(start_seq=0, can_replay=True, clock=lambda: 100.0):
    """A stream whose start replay found an empty buffer."""
    s = EventStream(make_decoder("vllm"), clock=clock, start_seq=start_seq,
                    can_replay=can_replay)
    if can_replay:
        assert s.replay_request() == start_seq
        assert s.on_replay(END) == []
    return s


def test_start_replay_then_live_in_order():
    """The start replay comes first; then live batches apply in order with their lag."""
    s = EventStream(make_decoder("vllm"), clock=lambda: 103.5)
    assert s.replaying and not s.in_sync
    with pytest.raises(IntegrityError):
        s.on_live(live(0))
    assert s.replay_request() == 0 and s.replay_request() is None
    assert s.on_replay(answer(0)) == [ev(0)]
    assert s.on_replay(END) == []
    assert s.in_sync and s.next_seq == 1
    assert s.on_live(live(1)) == [ev(1)]
    assert s.on_live(live(2, ts=101.0)) == [ev(2)]
    assert s.stats.as_dict() == {"batches": 3, "duplicates": 0, "gaps": 0, "lost": 0,
                                 "replays": 1, "replay_failures": 0, "restarts": 0,
                                 "bad_frames": 0, "last_seq": 2, "lag_s": 2.5}


def test_gap_is_filled_by_replay_and_the_held_message_is_a_duplicate():
    """Live 0, 3: replay from 1 returns 1..3; 3 then arrives again as the held message."""
    s = started()
    assert s.on_live(live(0)) == [ev(0)]
    assert s.on_live(live(3)) == []
    assert s.replaying and s.replay_request() == 1
    out = []
    for seq in (1, 2, 3):  # the publisher's buffer from 1 on, 3 included
        out += s.on_replay(answer(seq))
    out += s.on_replay(END)
    assert out == [ev(1), ev(2), ev(3)]
    assert s.stats.gaps == 1 and s.stats.duplicates == 1 and s.stats.lost == 0
    assert s.in_sync and s.on_live(live(4)) == [ev(4)]


def test_replay_that_cannot_reach_back_counts_the_loss():
    """The engine's buffer starts at 5 when 1 is wanted: 1..4 are lost, 5.. applied."""
    s = started()
    s.on_live(live(0))
    s.on_live(live(6))
    assert s.replay_request() == 1
    assert s.on_replay(answer(5)) == [ev(5)]
    assert s.on_replay(answer(6)) == [ev(6)]
    assert s.on_replay(END) == []
    assert s.stats.lost == 4 and not s.in_sync and s.next_seq == 7


def test_restart_clears_and_replays_from_zero():
    """A live sequence that goes backwards is an engine restart: clear, replay from 0."""
    s = started()
    for seq in range(4):
        s.on_live(live(seq))
    assert s.on_live(live(2)) == [AllBlocksCleared()]
    assert s.replay_request() == 0
    out = s.on_replay(answer(0)) + s.on_replay(answer(1)) + s.on_replay(answer(2))
    out += s.on_replay(END)
    assert out == [ev(0), ev(1), ev(2)]
    assert s.stats.restarts == 1 and s.stats.duplicates == 1 and s.in_sync


def test_restart_replays_even_from_sequence_zero():
    """Batch 0 after batch 1 may be a repeat rather than a restart: the replay from 0
    tells, here by returning the publisher's batch 1 as well."""
    s = started()
    s.on_live(live(0))
    s.on_live(live(1))
    assert s.on_live(live(0)) == [AllBlocksCleared()]
    assert s.replay_request() == 0
    out = s.on_replay(answer(0)) + s.on_replay(answer(1)) + s.on_replay(END)
    assert out == [ev(0), ev(1)] and s.stats.duplicates == 1 and s.in_sync


def test_restart_without_replay_applies_at_once():
    """Without a replay socket a restarted engine's batch 0 follows the clear directly."""
    s = started(can_replay=False)
    s.on_live(live(0))
    s.on_live(live(1))
    assert s.on_live(live(0)) == [AllBlocksCleared(), ev(0)]
    assert s.stats.restarts == 1 and s.in_sync


def test_replay_timeout_then_a_clear_restores_sync():
    """A timed-out replay loses the gap and the sync; a later AllBlocksCleared restores it."""
    s = started()
    s.on_live(live(0))
    s.on_live(live(2))
    assert s.replay_request() == 1
    assert s.replay_failed() == [ev(2)]
    assert s.stats.replay_failures == 1 and s.stats.lost == 1 and not s.in_sync
    assert s.on_replay(answer(1)) == []  # a late answer to the failed replay
    assert s.stats.bad_frames == 1
    assert s.on_live(live(3, events=[AllBlocksCleared()])) == [AllBlocksCleared()]
    assert s.in_sync


def test_failed_start_replay_is_out_of_sync():
    """Without an answer to the start replay the history is unknown."""
    s = EventStream(make_decoder("vllm"), clock=lambda: 0.0)
    s.replay_request()
    assert s.replay_failed() == [] and not s.in_sync


def test_without_replay_gaps_are_lost_at_once():
    """With no replay socket a gap is counted as lost and the message applied."""
    s = started(can_replay=False)
    assert s.on_live(live(0)) == [ev(0)]
    assert s.on_live(live(3)) == [ev(3)]
    assert s.stats.gaps == 1 and s.stats.lost == 2 and not s.in_sync


def test_resume_from_a_kept_sequence():
    """start_seq resumes after a state the caller kept: older answers are duplicates."""
    s = EventStream(make_decoder("vllm"), clock=lambda: 0.0, start_seq=5)
    assert s.replay_request() == 5
    assert s.on_replay(answer(4)) == [] and s.on_replay(answer(5)) == [ev(5)]
    s.on_replay(END)
    assert s.stats.duplicates == 1 and s.in_sync and s.next_seq == 6


def test_bad_frames_and_bad_payloads():
    """Wrong framing is counted and skipped; an undecodable payload uses its sequence
    number, is counted by the decoder and puts the stream out of sync."""
    s = started()
    assert s.on_live([b"only one frame"]) == []
    assert s.on_live([b"", b"\x00" * 7, b"x"]) == []
    assert s.on_live([b"", pack_seq(-1), b"x"]) == []
    assert s.stats.bad_frames == 3 and s.in_sync
    assert s.on_live([b"", pack_seq(0), b"\xc1junk"]) == []
    assert s.stats.last_seq == 0 and not s.in_sync
    assert s.decoder.stats.errors == {"batch": 1}
    assert s.on_replay([b"x"]) == [] and s.stats.bad_frames == 4  # no replay is open


def test_malformed_event_puts_the_stream_out_of_sync():
    """A skipped event of a known kind loses state; an unknown kind alone does not."""
    s = started()
    bad = encode_batch(EventBatch(1.0, (BlockRemoved((1,)),)))[:-1]  # truncated
    assert s.on_live([b"", pack_seq(0), bad]) == [] and not s.in_sync
    s = started()
    unknown = encode([1.0, [["BlockMoved", [1]], ["BlockRemoved", [2]]]])
    assert s.on_live([b"", pack_seq(0), unknown]) == [BlockRemoved((2,))]
    assert s.in_sync
    skipped = encode([1.0, [["BlockRemoved", "x"], ["BlockRemoved", [2]]]])
    assert s.on_live([b"", pack_seq(1), skipped]) == [BlockRemoved((2,))]
    assert not s.in_sync


def test_an_engine_that_comes_up_late_is_in_sync_from_its_first_batch():
    """The start replay times out (no engine yet): out of sync. The engine's first batch
    (seq 0) proves nothing is missing, live or by the replay of a gap."""
    s = EventStream(make_decoder("vllm"), clock=lambda: 100.0)
    assert s.replay_request() == 0
    s.replay_failed()
    assert not s.in_sync
    assert s.on_live(live(0)) == [ev(0)]
    assert s.in_sync
    late = EventStream(make_decoder("vllm"), clock=lambda: 100.0)
    late.replay_request()
    late.replay_failed()
    assert late.on_live(live(2)) == []  # seq 0 and 1 went by before the subscription
    assert late.replay_request() == 0
    assert late.on_replay(answer(0)) == [ev(0)] and late.on_replay(answer(1)) == [ev(1)]
    assert late.on_replay(END) == [ev(2)]
    assert late.in_sync
