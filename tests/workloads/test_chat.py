"""Multi-turn chat: exact prompts, the history-prefix invariant, modes, loaders, errors."""

import itertools
import json

import numpy as np
import pytest

from kvroute.errors import ConfigError
from kvroute.workloads.chat import ChatConfig, load_sharegpt, synthetic_chat
from kvroute.workloads.request import ClosedLoop, OpenLoop, output_ids
from kvroute.workloads.tokenizer import (
    BOS_ID,
    EOT_ID,
    BuiltinTokenizer,
    apply_chat_template,
    header_ids,
)

U, A = header_ids("user").tolist(), header_ids("assistant").tolist()


def _sessions(w):
    assert isinstance(w, ClosedLoop)
    return w.sessions


def test_exact_prompt_construction_on_a_tiny_config():
    """Turn 1 = BOS, user 0, assistant reply 0, user 1, assistant header (Llama-3 ids)."""
    w = synthetic_chat(ChatConfig(clients=1, turns=(2,), user_tokens=3, output_len=2))
    t0, t1 = _sessions(w)[0]
    u0, u1 = t0.tokens[5:8].tolist(), t1.tokens[-8:-5].tolist()
    r0 = t0.output_tokens.tolist()
    assert t0.tokens.tolist() == [BOS_ID, *U, *u0, EOT_ID, *A]
    assert t1.tokens.tolist() == [BOS_ID, *U, *u0, EOT_ID, *A, *r0, EOT_ID, *U, *u1, EOT_ID,
                                  *A]
    assert (t0.session, t0.turn, t1.turn, t0.output_len) == (0, 0, 1, 2)


def test_next_turn_starts_with_prompt_plus_output():
    """Turn k+1's prompt starts with turn k's prompt followed by output_ids(turn k)."""
    w = synthetic_chat(ChatConfig(clients=8, user_tokens=32, output_len=4))
    for s in _sessions(w):
        for a, b in itertools.pairwise(s):
            head = np.concatenate([a.tokens, output_ids(a)])
            assert np.array_equal(b.tokens[:len(head)], head)


def test_closed_loop_sessions_rotate_turn_counts():
    """Client i keeps turns[i % 4] = 2/4/6/8 turns; concurrency defaults to clients."""
    w = synthetic_chat(ChatConfig(clients=8, user_tokens=8))
    assert isinstance(w, ClosedLoop) and w.concurrency == 8 and w.think_time == 0.0
    assert [len(s) for s in w.sessions] == [2, 4, 6, 8] * 2 and w.size == 40
    assert all(r.session == c and r.turn == k
               for c, s in enumerate(w.sessions) for k, r in enumerate(s))
    assert len({r.rid for r in w}) == 40
    w = synthetic_chat(ChatConfig(clients=4, user_tokens=8, concurrency=2, think_time=0.5))
    assert (w.concurrency, w.think_time) == (2, 0.5)


def test_forced_user_turn_length():
    """Every user turn is exactly user_tokens ids: prompt lengths follow the template."""
    cfg = ChatConfig(clients=4, user_tokens=100, output_len=4)
    for s in _sessions(synthetic_chat(cfg)):
        for k, r in enumerate(s):
            assert r.prompt_len == 1 + (k + 1) * (4 + 100 + 1) + k * (4 + 4 + 1) + 4


def test_messages_hold_the_chat_form():
    """Turn k carries 2k+1 alternating messages ending with its user turn."""
    s = _sessions(synthetic_chat(ChatConfig(clients=4, user_tokens=5, output_len=2)))[3]
    for k, r in enumerate(s):
        assert [m["role"] for m in r.messages] == ["user", "assistant"] * k + ["user"]
        assert len(r.messages[-1]["content"].split()) == 5
        assert apply_chat_template(r.messages).startswith("<|begin_of_text|>")
    assert s[2].messages[:3] == s[1].messages


def test_open_mode_is_turn_major_with_poisson_arrivals():
    """Open loop: all turn-0 requests (shuffled clients) first, then turn 1, ...;
    a client's turn k always arrives after its turn k-1."""
    w = synthetic_chat(ChatConfig(clients=16, user_tokens=4, mode="open", rate=5.0))
    assert isinstance(w, OpenLoop) and w.size == 16 * 5
    reqs = list(w)
    turns = [r.turn for r in reqs]
    assert turns == sorted(turns)
    assert [r.session for r in reqs[:16]] != list(range(16))
    assert sorted(r.session for r in reqs[:16]) == list(range(16))
    arrivals = [r.arrival for r in reqs]
    assert all(b > a for a, b in itertools.pairwise(arrivals))
    assert 2.0 < len(reqs) / arrivals[-1] < 12.0


def test_seeds_and_names_reproduce_or_differ():
    """Same seed -> same tokens; other seed or other name -> other tokens; modes agree."""
    cfg = ChatConfig(clients=3, user_tokens=16)
    a, b = list(synthetic_chat(cfg)), list(synthetic_chat(cfg))
    assert all(np.array_equal(x.tokens, y.tokens) for x, y in zip(a, b, strict=True))
    c = list(synthetic_chat(ChatConfig(clients=3, user_tokens=16, seed=2)))
    assert not np.array_equal(a[0].tokens, c[0].tokens)
    u = list(synthetic_chat(cfg, name="ultrachat"))
    assert not np.array_equal(a[0].tokens, u[0].tokens)
    o = sorted(synthetic_chat(ChatConfig(clients=3, user_tokens=16, mode="open")),
               key=lambda r: r.rid)
    assert all(np.array_equal(x.tokens, y.tokens) and x.rid == y.rid
               for x, y in zip(a, o, strict=True))


def _conv(users, system=False):
    msgs = [{"from": "system", "value": "be nice"}] if system else []
    for u in users:
        msgs += [{"from": "human", "value": u}, {"from": "gpt", "value": "ok sure"}]
    return {"id": "x", "conversations": msgs}


def test_load_sharegpt_conversations_json(tmp_path):
    """ShareGPT JSON: short conversations skipped, system and gpt text dropped, user turns
    truncated to user_tokens (content cut to match) or padded with seeded ids."""
    long_text = " ".join(f"word{i}" for i in range(50))
    data = [_conv(["too", "few"]), _conv([long_text, "hi there", "c"], system=True),
            _conv(["a b", "c", "d"])]
    path = tmp_path / "sg.json"
    path.write_text(json.dumps(data))
    cfg = ChatConfig(clients=2, turns=(2, 3), user_tokens=8, output_len=2, min_user_turns=3)
    sessions = _sessions(load_sharegpt(path, cfg))
    assert [len(s) for s in sessions] == [2, 3]
    tok = BuiltinTokenizer()
    first = sessions[0][0]
    assert first.tokens[5:13].tolist() == tok.encode(long_text)[:8].tolist()
    assert first.messages[0]["content"] == "word0 word1 word2 word3 "
    second = sessions[0][1].tokens[-13:-5]
    assert second[:3].tolist() == tok.encode("hi there").tolist()
    assert len(sessions[0][1].messages[2]["content"].split()) == 2 + 5
    for s in sessions:
        for k, r in enumerate(s):
            assert r.prompt_len == 1 + (k + 1) * 13 + k * 7 + 4


def test_load_messages_jsonl_and_ultrachat_data(tmp_path):
    """JSONL with role/content messages and UltraChat's raw 'data' lists both load."""
    path = tmp_path / "chat.jsonl"
    rows = [{"messages": [{"role": "user", "content": f"q{i}"},
                          {"role": "assistant", "content": "a"}] * 2} for i in range(2)]
    rows.append({"data": ["u1", "a1", "u2", "a2"]})
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    cfg = ChatConfig(clients=3, turns=(2,), user_tokens=4, min_user_turns=2, mode="open")
    w = load_sharegpt(path, cfg, name="ultrachat")
    assert isinstance(w, OpenLoop) and w.name == "ultrachat" and w.size == 6
    by_rid = sorted(w, key=lambda r: r.rid)
    assert by_rid[0].messages[0]["content"].startswith("q0")
    assert by_rid[4].messages[0]["content"].startswith("u1")


def test_loader_errors_are_friendly(tmp_path):
    """Missing file, bad JSON, bad JSONL line, wrong schema, too few conversations."""
    cfg = ChatConfig(clients=2, turns=(2,), user_tokens=4, min_user_turns=2)
    with pytest.raises(ConfigError, match="not found"):
        load_sharegpt(tmp_path / "missing.json", cfg)
    with pytest.raises(ConfigError, match="directory"):
        load_sharegpt(tmp_path, cfg)
    bad = tmp_path / "bad.json"
    bad.write_text('[{"conversations": []},')
    with pytest.raises(ConfigError, match=r"bad\.json:1: bad JSON"):
        load_sharegpt(bad, cfg)
    bad.write_text('{"conversations": []}\n{oops\n')
    with pytest.raises(ConfigError, match=r"bad\.json:2"):
        load_sharegpt(bad, cfg)
    bad.write_text(json.dumps([{"turns": []}]))
    with pytest.raises(ConfigError, match=r"bad.json\[0\].*'conversations'"):
        load_sharegpt(bad, cfg)
    bad.write_text(json.dumps([{"conversations": [{"from": "human"}]}]))
    with pytest.raises(ConfigError, match="value"):
        load_sharegpt(bad, cfg)
    bad.write_text(json.dumps([_conv(["a", "b"]), _conv(["a"])]))
    with pytest.raises(ConfigError, match=r"only 1 of 2 conversations.*lower clients"):
        load_sharegpt(bad, cfg)
    bad.write_text("")
    with pytest.raises(ConfigError, match="empty"):
        load_sharegpt(bad, cfg)


def test_bad_config_is_a_clear_error():
    """Invalid config values raise ConfigError naming the field."""
    for kw, field in [({"clients": 0}, "clients"), ({"turns": ()}, "turns"),
                      ({"mode": "burst"}, "mode"), ({"concurrency": 0}, "concurrency"),
                      ({"rate": 0}, "rate"), ({"think_time": -1}, "think_time"),
                      ({"user_tokens": 0}, "user_tokens")]:
        with pytest.raises(ConfigError, match=field):
            ChatConfig(**kw)
