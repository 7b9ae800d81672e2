"""Replies recorded in the router's prefix index (for a policy that declares
``records_replies``): the text of an answer, whole or streamed, continues its prompt's
units as a conversation's next turn holds them."""

from __future__ import annotations

import json

import aiohttp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvroute.protocol.request_body import PromptEncoder, chars, chat_text
from kvroute.protocol.response_body import (
    SSELines,
    SSEScanner,
    _stream_text,
    answer_text,
    reply_text,
)
from kvroute.routing import make_router_policy
from kvroute.routing.base import RouteRequest
from kvroute.server.app import ServeConfig, build_app
from kvroute.worker import EmulatedConfig, create_app
from kvroute.workloads.tokenizer import load_tokenizer
from tests.server.test_responses_api import _start


def _sse(*events: object, compact: bool = False) -> bytes:
    sep = (",", ":") if compact else (", ", ": ")
    return b"".join(b"data: " + json.dumps(e, separators=sep, ensure_ascii=compact).encode()
                    + b"\n\n" for e in events) + b"data: [DONE]\n\n"


def test_reply_text_of_whole_answers() -> None:
    assert reply_text({"choices": [{"message": {"role": "assistant", "content": "hi"}}]}) == "hi"
    assert reply_text({"choices": [{"text": " there"}, {"text": "other"}]}) == " there"
    assert reply_text({"text": "sglang", "meta_info": {}}) == "sglang"
    assert reply_text([{"text": "first"}, {"text": "second"}]) == "first"  # a batch
    for none in ({"choices": []}, {"choices": [{"message": {"content": None}}]}, [], "x",
                 {"error": {"message": "no"}}):
        assert reply_text(none) is None


def test_stream_text_joins_choice_zero_deltas_or_takes_sglang_last() -> None:
    chat = _sse({"choices": [{"index": 0, "delta": {"role": "assistant"}}]},
                {"choices": [{"index": 0, "delta": {"content": "Hel"}}]},
                {"choices": [{"index": 1, "delta": {"content": "XX"}}]},
                {"choices": [{"index": 0, "delta": {"content": "lo"}}]},
                {"choices": [], "usage": {"completion_tokens": 2}})
    reader = SSEScanner(text=True)
    for i in range(0, len(chat), 7):  # split anywhere
        reader.feed(chat[i:i + 7])
    reader.close()
    assert reader.text == "Hello" and reader.usage.completion_tokens == 2
    comp = SSEScanner(text=True)
    comp.feed(_sse({"choices": [{"index": 0, "text": "a"}]},
                   {"choices": [{"index": 0, "text": "b"}]}))
    assert comp.text == "ab"
    native = SSEScanner(text=True)
    native.feed(_sse({"text": "so"}, {"text": "so far"}))
    assert native.text == "so far"
    plain = SSEScanner()
    plain.feed(chat)
    assert plain.text is None  # not asked to keep it


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(), min_size=1, max_size=6), st.booleans(), st.booleans(),
       st.booleans())
def test_reading_without_parsing_agrees_with_the_parse(pieces: list[str], chat: bool,
                                                      compact: bool, second: bool) -> None:
    # deltas with quotes, backslashes, unicode; a reasoning field and logprobs beside them
    def choice(i: int, t: str) -> dict:
        if chat:
            return {"index": i, "delta": {"reasoning_content": "hm", "content": t},
                    "logprobs": {"content": [{"token": t}]}}
        return {"index": i, "text": t, "logprobs": None}
    events = [{"choices": [choice(0, t)] + ([choice(1, "other")] if second else [])}
              for t in pieces] + [{"choices": [], "usage": {"completion_tokens": 3}}]
    raw = _sse(*events, compact=compact)
    lines = SSELines()
    assert answer_text(raw, stream=True) == _stream_text(lines.feed(raw) + lines.close()) \
        == "".join(pieces)
    body = json.dumps({"choices": [{"index": 0, "message": {"content": "".join(pieces)}}]
                       if chat else [{"index": 0, "text": "".join(pieces)}]},
                      ensure_ascii=compact).encode()
    assert answer_text(body) == reply_text(json.loads(body)) == "".join(pieces)


def test_sglang_native_and_batches_without_parsing() -> None:
    assert answer_text(b'{"text": "whole", "meta_info": {"id": "x"}}') == "whole"
    assert answer_text(b'[{"text": "first"}, {"text": "second"}]') == "first"
    assert answer_text(_sse({"text": "so"}, {"text": "so far"}), stream=True) == "so far"
    assert answer_text(b'{"error": {"message": "no"}}') is None
    assert answer_text(b"not json [") is None


def test_a_stream_past_the_limit_keeps_no_text(monkeypatch: pytest.MonkeyPatch) -> None:
    import kvroute.protocol.response_body as rb
    monkeypatch.setattr(rb, "TEXT_LIMIT", 100)
    reader = SSEScanner(text=True)
    reader.feed(_sse(*({"choices": [{"index": 0, "delta": {"content": "x" * 20}}]}
                       for _ in range(5))))
    assert reader.text is None


def test_reply_units_continue_the_prompt_as_the_next_turn_holds_it() -> None:
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    after = [*msgs, {"role": "assistant", "content": "hello!"},
             {"role": "user", "content": "more"}]
    plain = PromptEncoder()
    units = plain.units("chat", {"messages": msgs})
    reply = plain.reply_units("chat", {"messages": msgs})
    assert reply is not None
    recorded = np.concatenate([units, reply("hello!")])
    nxt = chars(chat_text(after))
    assert np.array_equal(nxt[:len(recorded)], recorded) and len(nxt) > len(recorded)
    tok = PromptEncoder(load_tokenizer(None))
    encode = tok.reply_units("chat", {"messages": msgs})
    assert encode is not None
    recorded = np.concatenate([tok.units("chat", {"messages": msgs}), encode("hello!")])
    nxt = tok.units("chat", {"messages": after})
    assert np.array_equal(nxt[:len(recorded)], recorded)
    text = plain.reply_units("completions", {"prompt": "Once"})
    assert text is not None and np.array_equal(text(" upon"), chars(" upon"))
    assert plain.reply_units("completions", {"prompt": [1, 2, 3]}) is None  # no tokenizer
    assert tok.reply_units("completions", {"prompt": [1, 2, 3]}) is not None
    assert plain.reply_units("responses", {"input": "hi"}) is None


@pytest.mark.asyncio
@pytest.mark.parametrize("policy, stream", [("learned", False), ("learned", True),
                                            ("cache_aware_v2", False)])
async def test_the_router_records_a_chat_reply_for_the_next_turn(policy: str,
                                                                  stream: bool) -> None:
    workers = [await _start(create_app(EmulatedConfig(speed=50.0))) for _ in range(2)]
    app = build_app(ServeConfig(worker_urls=[u for _, u in workers], health_interval=5.0),
                    make_router_policy(policy))
    await app.start("127.0.0.1", 0)
    msgs = [{"role": "user", "content": "tell me a story"}]
    try:
        async with aiohttp.ClientSession() as http, http.post(
                f"http://127.0.0.1:{app.port}/v1/chat/completions",
                json={"messages": msgs, "max_tokens": 6, "stream": stream}) as r:
            assert r.status == 200
            owner = [u for _, u in workers].index(r.headers["X-Kvroute-Worker"])
            raw = await r.read()
        if stream:
            reader = SSEScanner(text=True)
            reader.feed(raw)
            text = reader.text
        else:
            text = reply_text(json.loads(raw))
        assert text
        after = [*msgs, {"role": "assistant", "content": text},
                 {"role": "user", "content": "go on"}]
        units = app.prompts.units("chat", {"messages": after})
        held = app.router.matched(RouteRequest(units)).tolist()[owner]
        prompt = len(app.prompts.units("chat", {"messages": msgs}))
        with_reply = len(chars(chat_text([*msgs, {"role": "assistant", "content": text}])))
        assert held == (with_reply if policy == "learned" else prompt)
        async with aiohttp.ClientSession() as http, http.get(
                f"http://127.0.0.1:{app.port}/metrics") as r:
            page = await r.text()
        line = next(x for x in page.splitlines() if x.startswith("kvroute_reply_units_total"))
        assert float(line.split()[1]) == (with_reply - prompt if policy == "learned" else 0)
    finally:
        await app.stop()
        for runner, _ in workers:
            await runner.cleanup()
