"""kvroute.protocol: one reading of requests, responses, errors and metric names for the
router, the emulated worker and the load generator, with a test for each place where the
three used to disagree."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp import web

from kvroute.bench.client import _Reply, http_request
from kvroute.bench.results import RequestResult
from kvroute.bench.scrape import cache_counters
from kvroute.protocol.metric_names import ENGINES, SGLANG, VLLM
from kvroute.protocol.request_body import (
    APIS,
    PATHS,
    BadRequest,
    PromptEncoder,
    ask_usage,
    chars,
    chat_text,
    json_body,
    max_tokens_of,
    prompts_of,
    session_key,
)
from kvroute.protocol.response_body import (
    DONE,
    SSELines,
    SSEScanner,
    Usage,
    UsageStripper,
    counts_of,
    error_body,
    error_message,
    usage_of,
)
from kvroute.routing import make_router_policy
from kvroute.server.app import RouterApp, ServeConfig, build_app
from kvroute.server.engine_metrics import engine_load
from kvroute.server.http_messages import error_response
from kvroute.worker import EmulatedConfig, create_app
from kvroute.worker.exported_metrics import ExportedMetrics
from kvroute.worker.http_api import WORKER_KEY
from kvroute.workloads.request import Request
from kvroute.workloads.tokenizer import apply_chat_template, load_tokenizer

# --------------------------------------------------------------------- request bodies


def test_prompt_forms_per_route() -> None:
    """Every accepted prompt form, and what each route reads."""
    def ids(route: str, body: dict[str, Any]) -> list[Any]:
        return [p.tolist() if isinstance(p, np.ndarray) else p for p in prompts_of(route, body)]

    assert ids("completions", {"prompt": "hi"}) == ["hi"]
    assert ids("completions", {"prompt": [1, 2]}) == [[1, 2]]
    assert ids("completions", {"prompt": ["a", "b"]}) == ["a", "b"]
    assert ids("completions", {"prompt": [[1], [2, 3]]}) == [[1], [2, 3]]
    assert ids("generate", {"text": ["a", "b"], "input_ids": [9]}) == ["a", "b"]
    assert ids("generate", {"input_ids": [[1], [2]]}) == [[1], [2]]
    msgs = [{"role": "user", "content": "hi"}]
    assert ids("chat", {"messages": msgs}) == [msgs]
    for route in APIS:
        assert route in PATHS
    with pytest.raises(ValueError, match="unknown route"):
        prompts_of("embeddings", {"prompt": "x"})


@pytest.mark.parametrize(("route", "body", "needle"), [
    ("completions", {"prompt": [1, -5]}, "token ids"),  # the router used to take it
    ("completions", {"prompt": [[1, 2], [-1]]}, "token ids"),
    ("generate", {"input_ids": [1, -5]}, "token ids"),
    ("completions", {"prompt": [1, True]}, "token ids"),
    ("completions", {"prompt": [2 ** 63]}, "token ids"),
    ("completions", {"prompt": ""}, "empty"),  # the router used to route it
    ("completions", {"prompt": []}, "empty"),
    ("completions", {"prompt": ["a", ""]}, "empty"),
    ("completions", {"prompt": ["a", 5]}, "must be"),  # the router used to take "a"
    ("completions", {"max_tokens": 3}, "'prompt' is required"),
    ("generate", {"text": [1, 2]}, "a string or a list of strings"),
    ("generate", {"input_ids": "abc"}, "token ids"),  # the worker used to encode it
    ("generate", {}, "'text' or 'input_ids'"),
    ("chat", {"messages": []}, "non-empty list"),
    ("chat", {"messages": [1]}, "role"),
])
def test_bad_prompts_are_bad_requests(route: str, body: dict[str, Any], needle: str) -> None:
    with pytest.raises(BadRequest, match=needle):
        prompts_of(route, body)


def test_units_text_ids_chat_and_first_of_a_batch() -> None:
    """Units: characters without a tokenizer (chat as :func:`chat_text`), the tokenizer's ids
    with one (chat through the template), ids as given; a batch keys on its first."""
    plain, tok = PromptEncoder(), load_tokenizer(None)
    with_tok = PromptEncoder(tok)
    assert plain.units("completions", {"prompt": "ab"}).tolist() == [97, 98]
    assert plain.units("completions", {"prompt": ["xy", "z"]}).tolist() == [120, 121]
    assert plain.units("completions", {"prompt": [[1, 2], [3]]}).tolist() == [1, 2]
    msgs = [{"role": "user", "content": "hé"}]
    assert "".join(map(chr, plain.units("chat", {"messages": msgs}))) == "user\nhé"
    assert np.array_equal(with_tok.units("chat", {"messages": msgs}),
                          tok.encode(apply_chat_template(msgs)))
    assert with_tok.units("generate", {"input_ids": [5, 6]}).tolist() == [5, 6]
    with pytest.raises(BadRequest, match="content"):
        with_tok.units("chat", {"messages": [{"role": "user"}]})


def test_max_tokens_per_route() -> None:
    """One field per route (chat: max_tokens, else max_completion_tokens); a wrong value
    is a BadRequest on every route, where the router used to ignore it."""
    assert max_tokens_of("completions", {"max_tokens": 5, "max_completion_tokens": 9}) == 5
    assert max_tokens_of("completions", {"max_completion_tokens": 9}) is None
    assert max_tokens_of("chat", {"max_completion_tokens": 9}) == 9
    assert max_tokens_of("chat", {"max_tokens": None, "max_completion_tokens": 9}) == 9
    assert max_tokens_of("generate", {"sampling_params": {"max_new_tokens": 4}}) == 4
    assert max_tokens_of("generate", {"max_tokens": 4}) is None
    assert max_tokens_of("completions", {}) is None
    for route, body, needle in (("completions", {"max_tokens": 0}, ">= 1"),
                                ("chat", {"max_tokens": "3"}, "integer"),
                                ("chat", {"max_tokens": True}, "integer"),
                                ("generate", {"sampling_params": 3}, "object"),
                                ("generate", {"sampling_params": {"max_new_tokens": -1}},
                                 ">= 1")):
        with pytest.raises(BadRequest, match=needle):
            max_tokens_of(route, body)


def test_json_body_and_session() -> None:
    assert json_body(b'{"a": 1}') == {"a": 1}
    for raw, needle in ((b"{no", "not valid JSON"), (b"[1]", "JSON object"),
                        (b"\xff", "not valid JSON")):
        with pytest.raises(BadRequest, match=needle):
            json_body(raw)
    assert session_key(None) is None and session_key("") is None
    k = session_key("user-1")
    assert k == session_key("user-1") != session_key("user-2")
    assert k is not None and 0 <= k < 2 ** 63
    assert session_key("\udcff") is not None  # a header that is not UTF-8


@pytest.mark.parametrize("api", APIS)
def test_load_generator_bodies_read_back_as_sent(api: str) -> None:
    """What the load generator sends, the protocol reads as its prompt and output length."""
    ids = Request(1, np.array([3, 1, 4]), 5)
    chat = Request(2, np.array([1]), 2, messages=[{"role": "user", "content": "hi there"}])
    tok = load_tokenizer(None)
    for req in (ids, chat):
        path, body = http_request(req, api, "m")
        assert path == PATHS[api]
        assert max_tokens_of(api, body) == req.output_len
        (prompt,) = prompts_of(api, body)
        if req is ids and api in ("chat", "responses"):  # ids have no chat form: their
            assert prompt == [{"role": "user", "content": "w3 w1 w4"}]  # stand-in text
        elif req is ids:
            assert isinstance(prompt, np.ndarray) and prompt.tolist() == [3, 1, 4]
        else:  # chat: the same template text, or the messages themselves
            units = PromptEncoder(tok).encode(prompt)
            assert np.array_equal(units, tok.encode(apply_chat_template(chat.messages or [])))


# --------------------------------------------------------------------- response bodies


def test_error_body_is_one_format() -> None:
    """The router's error responses are the protocol's body (its SSE error event too:
    tests/server/test_router_app.py, the stream that fails midway)."""
    body = error_body("no", "invalid_request_error", 400)
    assert body == {"error": {"message": "no", "type": "invalid_request_error", "code": 400}}
    assert json.loads(error_response(400, "no", "invalid_request_error").body) == body
    assert error_message(body) == "no"
    assert error_message({"error": "plain"}) == "plain"
    assert error_message({"error": None, "choices": []}) is None
    assert error_message({"error": "x", "choices": [{}]}) is None


def test_usage_reads_openai_and_sglang() -> None:
    openai = {"usage": {"prompt_tokens": 10, "completion_tokens": 2,
                        "prompt_tokens_details": {"cached_tokens": 4}}}
    assert (usage_of(openai).prompt_tokens, usage_of(openai).completion_tokens,
            usage_of(openai).cached_tokens) == (10, 2, 4)
    sglang = {"text": "x", "meta_info": {"prompt_tokens": 8, "completion_tokens": 1,
                                         "cached_tokens": 3}}
    assert usage_of(sglang).cached_tokens == 3 and usage_of(sglang).prompt_tokens == 8
    flat = {"usage": {"prompt_tokens": 8, "cached_tokens": 5}}
    assert usage_of(flat).cached_tokens == 5
    mixed = {"usage": {"prompt_tokens": 8}, "meta_info": {"cached_tokens": 6}}
    assert usage_of(mixed).cached_tokens == 6
    for bad in (None, True, -1, 2.5, "3"):
        assert usage_of({"meta_info": {"cached_tokens": bad}}).cached_tokens is None
    assert usage_of([1]).prompt_tokens is None


def test_sse_scanner_reads_cached_tokens_across_chunks() -> None:
    """cached_tokens from an OpenAI usage chunk split across reads, or SGLang meta_info."""
    s = SSEScanner()
    event = b'data: {"usage": {"prompt_tokens_details": {"cached_tokens": 12}}}\n\n'
    for i in range(0, len(event), 7):
        s.feed(event[i:i + 7])
    s.feed(b"data: [DONE]\n\n")
    assert s.usage.cached_tokens == 12 and s.usage.prompt_tokens is None and s.done
    g = SSEScanner()
    g.feed(b'data: {"text": "a", "meta_info": {"prompt_tokens": 9, "cached_tokens": 3}}')
    g.close()
    assert (g.usage.cached_tokens, g.usage.prompt_tokens) == (3, 9)


def cached_tokens_of(body: bytes) -> tuple[int | None, int | None]:
    """The router's cached count and the prompt count read beside it."""
    usage = counts_of(body)
    return usage.cached_tokens, usage.prompt_tokens


def completion_tokens_of(body: bytes) -> int | None:
    return counts_of(body).completion_tokens


def test_cached_tokens_of_reads_keys_not_text() -> None:
    """The fast path (one key, read by a pattern) and the parse agree; generated text that
    spells the key is never read; batches and nulls go through the parse."""
    usage = {"usage": {"prompt_tokens_details": {"cached_tokens": 12}}}
    assert cached_tokens_of(json.dumps(usage).encode()) == (12, None)
    both = {"usage": {"prompt_tokens": 40, "prompt_tokens_details": {"cached_tokens": 12}}}
    assert cached_tokens_of(json.dumps(both).encode()) == (12, 40)  # the fast path
    meta = {"text": '"cached_tokens": 99', "meta_info": {"cached_tokens": 7,
                                                         "prompt_tokens": 20}}
    assert cached_tokens_of(json.dumps(meta).encode()) == (7, 20)  # parsed
    spelled = {"text": '"prompt_tokens": 99', "meta_info": {"cached_tokens": 7}}
    assert cached_tokens_of(json.dumps(spelled).encode()) == (7, None)
    text_only = {"choices": [{"text": '{"cached_tokens": 99}'}]}
    assert cached_tokens_of(json.dumps(text_only).encode()) == (None, None)
    batch = [{"meta_info": {"cached_tokens": 7, "prompt_tokens": 9}},
             {"meta_info": {"cached_tokens": 3, "prompt_tokens": 9}}]
    assert cached_tokens_of(json.dumps(batch).encode()) == (10, None)
    null = {"usage": {"prompt_tokens_details": {"cached_tokens": None}}}
    assert cached_tokens_of(json.dumps(null).encode()) == (None, None)


def test_sse_lines() -> None:
    """data: payloads across chunk boundaries; comments, event: lines, blank separators and
    CRLF; an unterminated last line on close; a runaway line dropped."""
    lines = SSELines()
    got = lines.feed(b": comment\r\nevent: x\r\ndata: {\"a\"") + lines.feed(b": 1}\r\n\r\nda")
    got += lines.feed(b"ta:[DONE]")
    assert got == [b'{"a": 1}']
    assert lines.close() == [DONE] and lines.close() == []
    capped = SSELines(max_line=8)
    assert capped.feed(b"data: " + b"x" * 20) == [] and capped.feed(b"\ndata: 1\n") == [b"1"]


def test_router_and_load_generator_read_the_same_counts() -> None:
    """The router's cached_tokens and the load generator's usage agree, chunk by chunk,
    for OpenAI usage, its flat form and SGLang meta_info (they used to differ)."""
    chunks = [{"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 2,
                                        "prompt_tokens_details": {"cached_tokens": 4}}},
              {"choices": [], "usage": {"prompt_tokens": 9, "cached_tokens": 5}},
              {"text": "ab", "meta_info": {"prompt_tokens": 9, "completion_tokens": 2,
                                           "cached_tokens": 6}}]
    for api, chunk in zip(("completions", "chat", "generate"), chunks, strict=True):
        raw = f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n".encode()
        scanner = SSEScanner()
        scanner.feed(raw)
        res = RequestResult(0, 0, 0, api, 0, 0.0, 0.0)
        reply = _Reply(res, api, lambda: 1.0)
        for payload in SSELines().feed(raw):
            reply.payload(payload)
        reply.close(Request(0, np.array([1]), 2))
        assert res.ok and scanner.done
        assert res.cached_tokens == scanner.usage.cached_tokens == cached_tokens_of(
            json.dumps(chunk).encode())[0] == usage_of(chunk).cached_tokens
        assert res.prompt_tokens == scanner.usage.prompt_tokens == 9
        assert scanner.usage.completion_tokens == completion_tokens_of(json.dumps(chunk).encode()) \
            == usage_of(chunk).completion_tokens


def test_completion_tokens_of_reads_keys_not_text() -> None:
    """The generated tokens, by the fast path, the parse (the key also spelled in the text),
    summed over an SGLang batch; none where the body reports none."""
    usage = {"choices": [{"text": "hi"}], "usage": {"prompt_tokens": 5, "completion_tokens": 3}}
    assert completion_tokens_of(json.dumps(usage).encode()) == 3
    spelled = {"text": '"completion_tokens": 99', "meta_info": {"completion_tokens": 7}}
    assert completion_tokens_of(json.dumps(spelled).encode()) == 7
    batch = [{"meta_info": {"completion_tokens": 7}}, {"meta_info": {"completion_tokens": 2}}]
    assert completion_tokens_of(json.dumps(batch).encode()) == 9
    for none in ({"choices": [{"text": '{"completion_tokens": 99}'}]},
                 {"usage": {"completion_tokens": None}}, {"usage": {}}):
        assert completion_tokens_of(json.dumps(none).encode()) is None


def test_sse_scanner_reads_the_last_completion_tokens() -> None:
    """OpenAI's usage event at the end; SGLang's meta_info in every chunk (the last one
    counts); generated text that spells the key is not a count."""
    s = SSEScanner()
    s.feed(b'data: {"choices": [{"delta": {"content": "\\"completion_tokens\\": 9"}}]}\n\n')
    assert s.usage.completion_tokens is None
    s.feed(b'data: {"choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 2}}\n\n')
    s.feed(b"data: [DONE]\n\n")
    assert s.usage.completion_tokens == 2 and s.usage.cached_tokens is None
    g = SSEScanner()
    for n in (1, 2, 3):
        g.feed(b'data: {"text": "a", "meta_info": {"completion_tokens": %d}}\n\n' % n)
    g.close()
    assert g.usage.completion_tokens == 3


# --------------------------------------------------------------------- metric names


def test_exported_metric_names_are_the_ones_read() -> None:
    """The worker's /metrics page is what the router's engine-load reader and the load
    generator's counter scrape look for, under both engines' names."""
    m = ExportedMetrics("m", 1000, running=lambda: 2, waiting=lambda: 1,
                        kv_usage=lambda: 0.25)
    m.prefilled(10, 4)
    m.generated(3)
    m.finished()
    text = m.render().decode()
    load = engine_load(text)
    assert load is not None
    assert (load.running, load.waiting, load.kv_usage, load.kv_capacity) == (2, 1, 0.25, 1000)
    assert load.max_running == 0  # an uncapped worker exports no cap
    vllm_only = "\n".join(line for line in text.splitlines() if "sglang:" not in line)
    load = engine_load(vllm_only)
    assert load is not None and (load.running, load.kv_capacity) == (2, 1000)
    capped = ExportedMetrics("m", 1000, running=lambda: 2, waiting=lambda: 1,
                             kv_usage=lambda: 0.25, max_running=48)
    load = engine_load(capped.render().decode())
    assert load is not None and load.max_running == 48
    counters = cache_counters(text)
    assert counters == {SGLANG.cache_hits: 4, SGLANG.cache_queries: 10,
                        VLLM.cache_hits: 4, VLLM.cache_queries: 10}
    for e in ENGINES:
        for name in (e.prompt_tokens, e.generation_tokens, e.requests_finished):
            assert f"{name}_total{{" in text


# --------------------------------------------------------------------- router + worker


@asynccontextmanager
async def router_and_worker(tokenizer: str | None = None, stream_usage: bool = False
                            ) -> AsyncIterator[tuple[aiohttp.ClientSession, RouterApp,
                                                     aiohttp.ClientSession, web.Application]]:
    """A router (tokenizer and template as ``kvroute serve --tokenizer`` loads them) in
    front of one emulated worker (``kvroute worker --emulate --tokenizer``)."""
    from kvroute.workloads.chat_template import find_chat_template

    app = create_app(EmulatedConfig(speed=200, capacity=8192, tokenizer=tokenizer))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    cfg = ServeConfig(worker_urls=[url], health_interval=0,
                      metrics_interval=0,
                      tokenizer=load_tokenizer(tokenizer) if tokenizer else None,
                      chat_template=find_chat_template(tokenizer) if tokenizer else None,
                      stream_usage=stream_usage)
    router = build_app(cfg, make_router_policy("round_robin"))
    await router.start("127.0.0.1", 0)
    client = aiohttp.ClientSession(f"http://127.0.0.1:{router.port}")
    direct = aiohttp.ClientSession(url)
    try:
        yield client, router, direct, app
    finally:
        await client.close()
        await direct.close()
        await router.stop()
        await runner.cleanup()


@pytest.mark.asyncio
async def test_batch_is_keyed_on_its_first_prompt_and_served_whole() -> None:
    """A batch goes through the router (keyed on the first prompt) and the worker serves
    every prompt of it; it used to refuse what the router forwarded."""
    async with router_and_worker() as (client, router, _, app):
        r = await client.post("/v1/completions", json={"prompt": ["one two", "three"],
                                                       "max_tokens": 2})
        assert r.status == 200, await r.text()
        body = await r.json()
        assert [c["index"] for c in body["choices"]] == [0, 1]
        tok = app[WORKER_KEY].tokenizer
        assert body["usage"]["prompt_tokens"] == len(tok.encode("one two")) + \
            len(tok.encode("three"))
        assert body["usage"]["completion_tokens"] == 4
        r = await client.post("/v1/completions", json={"prompt": [[1, 2, 3], [4, 5]],
                                                       "max_tokens": 2, "stream": True})
        events = [line[6:] for line in (await r.text()).splitlines()
                  if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        assert [json.loads(e)["choices"][0]["index"] for e in events[:-1]] == [0, 0, 1, 1]
        r = await client.post("/generate", json={"input_ids": [[1, 2], [3, 4, 5]],
                                                 "sampling_params": {"max_new_tokens": 1}})
        results = await r.json()
        assert [x["meta_info"]["prompt_tokens"] for x in results] == [2, 3]
        index = router.router.index
        assert index is not None  # round_robin's units: the first prompt of each batch
        assert index.match(np.array([1, 2, 3])).tolist() == [3]
        assert index.match(np.array([4, 5])).tolist() == [0]


@pytest.mark.asyncio
@pytest.mark.parametrize("stream_usage", [False, True])
async def test_stream_usage_gives_the_router_cached_tokens_the_client_did_not_ask_for(
        stream_usage: bool) -> None:
    """With ``stream_usage`` the router asks the engine for a streamed request's usage and
    the policy hears its cached and generated tokens, while the client's stream is what it
    would be without (no usage event); a client that asked for usage still gets it."""
    async with router_and_worker(stream_usage=stream_usage) as (client, router, _, _app):
        heard: list[int | None] = []
        outputs: list[int | None] = []
        inner = router.router.policy.on_complete
        router.router.policy.on_complete = lambda fb: (heard.append(fb.cached_tokens),
                                                       outputs.append(fb.output_tokens),
                                                       inner(fb))[2]
        for _ in range(2):  # the second finds the first's prompt cached
            r = await client.post("/v1/chat/completions", json={
                "messages": [{"role": "user", "content": "a b c d e f g"}],
                "max_tokens": 3, "stream": True})
            events = [line[6:] for line in (await r.text()).splitlines()
                      if line.startswith("data: ")]
            assert events[-1] == "[DONE]" and len(events) > 3
            assert all(json.loads(e)["choices"] for e in events[:-1])  # no usage event
        r = await client.post("/v1/completions", json={
            "prompt": "a b c", "max_tokens": 2, "stream": True,
            "stream_options": {"include_usage": True}})
        events = [line[6:] for line in (await r.text()).splitlines()
                  if line.startswith("data: ")]
        assert json.loads(events[-2])["usage"]["completion_tokens"] == 2
        for _ in range(50):
            if len(heard) == 3:
                break
            await asyncio.sleep(0.02)
        assert heard[2] is not None  # the client asked: the router reads it either way
        assert outputs[2] == 2  # and the tokens generated
        if stream_usage:
            assert heard[0] == 0 and heard[1] is not None and heard[1] > 0
            assert outputs[:2] == [3, 3]
        else:
            assert heard[:2] == [None, None] and outputs[:2] == [None, None]
        r = await client.post("/v1/completions", json={"prompt": "a b", "max_tokens": 2})
        assert (await r.json())["usage"]["completion_tokens"] == 2
        for _ in range(50):
            if len(outputs) == 4:
                break
            await asyncio.sleep(0.02)
        assert outputs[3] == 2  # a reply that does not stream always says


@pytest.mark.asyncio
@pytest.mark.parametrize(("path", "body", "needle"), [
    ("/v1/completions", {"prompt": [1, -5], "max_tokens": 1}, "token ids"),
    ("/v1/completions", {"prompt": "", "max_tokens": 1}, "empty"),
    ("/v1/completions", {"prompt": "x", "max_tokens": 0}, ">= 1"),
    ("/v1/chat/completions", {"messages": [{"content": "x"}]}, "role"),
    ("/generate", {"input_ids": "abc"}, "token ids"),
    ("/generate", {"text": "x", "sampling_params": []}, "object"),
])
async def test_bad_requests_are_the_same_400_everywhere(path: str, body: dict[str, Any],
                                                        needle: str) -> None:
    """The router refuses what the worker refuses, with the same error body, before any
    worker is tried (it used to route these, or route them on a cut prompt)."""
    async with router_and_worker() as (client, router, direct, _):
        answers = []
        for session in (client, direct):
            r = await session.post(path, json=body)
            assert r.status == 400
            answers.append(await r.json())
            assert "X-Kvroute-Worker" not in r.headers
        assert answers[0] == answers[1]
        err = answers[0]["error"]
        assert needle in err["message"] and err["type"] == "invalid_request_error"
        assert err["code"] == 400
        assert [s.routed for s in router.router.workers] == [0]


@pytest.mark.asyncio
async def test_worker_uses_the_models_chat_template_as_the_router_does(tmp_path: Path) -> None:
    """Given a tokenizer with a tokenizer_config.json beside it, the worker renders chat
    through that template, as the router does: the prompt the worker counts is the
    router's units (the worker used to apply the Llama-3-like template only)."""
    tokenizers = pytest.importorskip("tokenizers")
    pytest.importorskip("jinja2")
    vocab = {"[UNK]": 0, "<s>": 1, "[user]": 2, "[assistant]": 3, "hi": 4, "there": 5}
    raw = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    raw.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    raw.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": "<s>",
        "chat_template": "{{ bos_token }}{% for m in messages %} [{{ m.role }}] "
                         "{{ m.content }}{% endfor %} [assistant]"}))
    msgs = [{"role": "user", "content": "hi there"}]
    async with router_and_worker(str(tmp_path / "tokenizer.json")) as (client, router, _, _a):
        units = router.prompts.units("chat", {"messages": msgs})
        assert units.tolist() == [1, 2, 4, 5, 3]
        r = await client.post("/v1/chat/completions", json={"messages": msgs,
                                                            "max_tokens": 1})
        assert r.status == 200
        assert (await r.json())["usage"]["prompt_tokens"] == len(units)


def test_sse_scanner_agrees_however_the_stream_is_cut() -> None:
    """Chunks that mention neither key are skipped without being split into lines; cut at
    any two points, the stream reads as it does whole (the key or [DONE] across a cut)."""
    raw = (b'data: {"choices": [{"delta": {"content": "x"}}]}\n\n'
           b'data: {"usage": {"prompt_tokens_details": {"cached_tokens": 12}}}\n\n'
           b"data: [DONE]\n\n")
    whole = SSEScanner()
    whole.feed(raw)
    assert (whole.usage.cached_tokens, whole.done) == (12, True)
    for i in range(len(raw) + 1):
        for j in range(i, len(raw) + 1, 3):
            s = SSEScanner()
            for part in (raw[:i], raw[i:j], raw[j:]):
                s.feed(part)
            s.close()
            assert (s.usage.cached_tokens, s.done) == (12, True), (i, j)
    capped = SSELines(max_line=8)
    capped.skip(b"data: " + b"x" * 20)  # a runaway line is dropped by skip as by feed
    assert capped.feed(b"\ndata: 1\n") == [b"1"]


def test_ask_usage_adds_stream_options_first_and_keeps_the_rest() -> None:
    raw = b'  {"model": "m", "stream": true, "messages": [{"role": "user", "content": "{"}]}'
    asked = ask_usage(raw)
    assert asked.endswith(raw[3:]) and asked.startswith(b'  {"stream_options":')
    assert json.loads(asked) == {**json.loads(raw), "stream_options": {"include_usage": True}}
    assert json.loads(ask_usage(b"{ }")) == {"stream_options": {"include_usage": True}}


def test_usage_stripper_takes_out_usage_events_however_the_stream_is_cut() -> None:
    """The usage event (choices empty, usage an object) and its blank line go; token
    chunks (``"usage": null`` in them, as vLLM sends with include_usage), a usage object
    beside choices, comments and [DONE] pass byte for byte, cut at any two points."""
    token = b'data: {"choices": [{"delta": {"content": "usage"}}], "usage": null}\n\n'
    beside = b'data: {"choices": [{"text": "t"}], "usage": {"completion_tokens": 1}}\n\n'
    final = (b'data: {"id": "x", "choices": [], "usage": {"prompt_tokens": 9, '
             b'"prompt_tokens_details": {"cached_tokens": 4}}}\n\n')
    raw = b": ping\n\n" + token + beside + final + b"data: [DONE]\n\n"
    want = b": ping\n\n" + token + beside + b"data: [DONE]\n\n"
    for i in range(len(raw) + 1):
        for j in range(i, len(raw) + 1, 5):
            u = UsageStripper()
            got = b"".join(u.feed(part) for part in (raw[:i], raw[i:j], raw[j:])) + u.close()
            assert got == want, (i, j)
    u = UsageStripper()  # a stream that ends on the usage event, unterminated
    assert u.feed(token + final[:-2]) == token and u.close() == b""
    u = UsageStripper()  # complete lines pass at once; a partial one waits for its end
    assert u.feed(b"data: 1\n\ndata: 2") == b"data: 1\n\n" and u.feed(b"\n") == b"data: 2\n"


def test_chars_are_code_points_one_or_four_bytes_each() -> None:
    """ASCII text becomes uint8 units, other text uint32; the values are the code points."""
    assert chars("ab").dtype == np.uint8 and chars("ab").tolist() == [97, 98]
    text = "a\u00e9\u2603\U0001f600"
    assert chars(text).dtype == np.uint32 and chars(text).tolist() == [ord(c) for c in text]


def test_chat_text_is_prefix_closed_and_keeps_other_messages_whole() -> None:
    """Plain messages are role and content; any other message is its compact JSON; a
    conversation's text is a prefix of its continuation's."""
    first = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    more = [*first, {"role": "assistant", "content": "hello"},
            {"role": "user", "content": [{"type": "text", "text": "and?"}]}]
    assert chat_text(first) == "system\nbe brief\n\nuser\nhi"
    assert chat_text(more).startswith(chat_text(first) + "\n\n")
    assert chat_text(more).endswith(
        '\n\n{"role":"user","content":[{"type":"text","text":"and?"}]}')
    named = [{"role": "user", "content": "hi", "name": "ann"}]
    assert chat_text(named) == '{"role":"user","content":"hi","name":"ann"}'


def test_counts_of_reads_both_keys_in_one_pass() -> None:
    """A body with both counts: read by the patterns when each key is there once, parsed
    when either is ambiguous, the same either way."""
    both = {"usage": {"prompt_tokens": 40, "completion_tokens": 5,
                      "prompt_tokens_details": {"cached_tokens": 12}}}
    assert counts_of(json.dumps(both).encode()) == Usage(40, 5, 12)
    twice = {**both, "meta_info": {"completion_tokens": 6}}  # OpenAI's usage comes first
    assert counts_of(json.dumps(twice).encode()) == Usage(40, 5, 12)
    assert counts_of(b'{"choices": []}') == Usage()
