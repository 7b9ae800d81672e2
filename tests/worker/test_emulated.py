"""The emulated worker: SGLang's and vLLM's HTTP API over a real-time SimWorker."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

pytest.importorskip("aiohttp")
pytest.importorskip("prometheus_client")
pytest_asyncio = pytest.importorskip("pytest_asyncio")

import aiohttp  # noqa: E402
from aiohttp import web  # noqa: E402
from aiohttp.test_utils import TestClient, TestServer  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from kvroute.cli import worker as worker_cli  # noqa: E402
from kvroute.errors import ConfigError  # noqa: E402
from kvroute.sim.step_profiles import load_profile  # noqa: E402
from kvroute.worker import http_api  # noqa: E402
from kvroute.worker.emulated import EmulatedConfig, filler_text  # noqa: E402
from kvroute.worker.http_api import WORKER_KEY, create_app  # noqa: E402

PROMPT = "You are a helpful assistant. " * 20 + "Tell me about radix trees."


@pytest_asyncio.fixture
async def client() -> AsyncIterator[TestClient]:
    app = create_app(EmulatedConfig(speed=50, capacity=8192, eviction="rlt"))
    async with TestClient(TestServer(app)) as c:
        yield c


def sse_events(text: str) -> list[Any]:
    """The ``data:`` payloads of an SSE body (JSON decoded, ``[DONE]`` kept as a string)."""
    out: list[Any] = []
    for block in text.split("\n\n"):
        block = block.strip()
        if not block:
            continue
        assert block.startswith("data: "), block
        data = block[len("data: "):]
        out.append(data if data == "[DONE]" else json.loads(data))
    return out


async def scrape(c: TestClient) -> dict[str, float]:
    r = await c.get("/metrics")
    assert r.status == 200
    assert r.headers["Content-Type"].startswith("text/plain")
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(await r.text()):
        for s in fam.samples:
            out[s.name] = s.value
    return out


@pytest.mark.asyncio
async def test_completion_with_usage(client: TestClient) -> None:
    """A non-streamed completion returns max_tokens of filler text and OpenAI usage."""
    r = await client.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 7})
    assert r.status == 200
    body = await r.json()
    assert body["object"] == "text_completion"
    assert body["model"] == "kvroute-emulated"
    choice = body["choices"][0]
    assert choice["text"] == filler_text(0, 7)
    assert choice["finish_reason"] == "length"
    u = body["usage"]
    n = len(client.app[WORKER_KEY].tokenizer.encode(PROMPT))
    assert u["prompt_tokens"] == n
    assert u["completion_tokens"] == 7
    assert u["total_tokens"] == n + 7
    assert u["prompt_tokens_details"]["cached_tokens"] == 0


@pytest.mark.asyncio
async def test_a_minimum_output_is_where_the_emulated_model_stops(client: TestClient) -> None:
    """min_tokens (SGLang: min_new_tokens) ends the output, as an end of sequence would
    ("stop"); 0 sets none; above max_tokens it is refused."""
    r = await client.post("/v1/completions", json={"prompt": "hi", "max_tokens": 100,
                                                   "min_tokens": 5})
    body = await r.json()
    assert body["usage"]["completion_tokens"] == 5
    assert body["choices"][0]["finish_reason"] == "stop"
    r = await client.post("/v1/chat/completions", json={
        "messages": [{"role": "user", "content": "hi"}], "min_tokens": 3, "stream": True})
    events = sse_events(await r.text())
    assert [e["choices"][0]["finish_reason"] for e in events[1:-1]] == [None, None, "stop"]
    r = await client.post("/generate", json={"text": "hi", "sampling_params": {
        "max_new_tokens": 9, "min_new_tokens": 4}})
    meta = (await r.json())["meta_info"]
    assert meta["completion_tokens"] == 4 and meta["finish_reason"] == {"type": "stop"}
    r = await client.post("/v1/completions", json={"prompt": "hi", "max_tokens": 2,
                                                   "min_tokens": 0})
    assert (await r.json())["usage"]["completion_tokens"] == 2
    r = await client.post("/v1/completions", json={"prompt": "hi", "max_tokens": 2,
                                                   "min_tokens": 3})
    assert r.status == 400 and "minimum" in (await r.json())["error"]["message"]


@pytest.mark.asyncio
async def test_repeat_hits_cache_and_metrics_move(client: TestClient) -> None:
    """A repeated prompt reports cached tokens, and SGLang's and vLLM's counters move."""
    before = await scrape(client)
    for _ in range(2):
        r = await client.post("/v1/completions", json={"prompt": [PROMPT], "max_tokens": 4})
        assert r.status == 200
        last = await r.json()
    n = last["usage"]["prompt_tokens"]
    assert last["usage"]["prompt_tokens_details"]["cached_tokens"] == n - 1
    after = await scrape(client)

    def delta(name: str) -> float:
        return after[name] - before.get(name, 0.0)

    assert delta("sglang:prompt_tokens_total") == 2 * n
    assert delta("vllm:prompt_tokens_total") == 2 * n
    assert delta("sglang:generation_tokens_total") == 8
    assert delta("vllm:generation_tokens_total") == 8
    assert delta("sglang:cached_tokens_total") == n - 1
    assert delta("vllm:prefix_cache_hits_total") == n - 1
    assert delta("vllm:prefix_cache_queries_total") == 2 * n
    assert delta("sglang:num_requests_total") == 2
    assert after["sglang:num_running_reqs"] == after["vllm:num_requests_running"] == 0
    assert after["sglang:num_queue_reqs"] == after["vllm:num_requests_waiting"] == 0
    # the prompt stays cached, but no request holds it: an engine counts it as free
    assert after["sglang:token_usage"] == after["vllm:gpu_cache_usage_perc"] == 0.0


@pytest.mark.asyncio
async def test_stream_sse_format(client: TestClient) -> None:
    """A streamed completion sends one chunk per token, then usage, then [DONE]."""
    r = await client.post("/v1/completions", json={
        "prompt": PROMPT, "max_tokens": 5, "stream": True,
        "stream_options": {"include_usage": True}})
    assert r.status == 200
    assert r.headers["Content-Type"].startswith("text/event-stream")
    events = sse_events(await r.text())
    assert events[-1] == "[DONE]"
    usage = events[-2]
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 5
    tokens = events[:-2]
    assert len(tokens) == 5
    assert "".join(e["choices"][0]["text"] for e in tokens) == filler_text(0, 5)
    assert [e["choices"][0]["finish_reason"] for e in tokens] == [None] * 4 + ["length"]
    assert all(e["object"] == "text_completion" for e in tokens)


@pytest.mark.asyncio
async def test_stream_without_usage(client: TestClient) -> None:
    """Without include_usage a stream is the token chunks then [DONE]."""
    r = await client.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 3,
                                                   "stream": True})
    events = sse_events(await r.text())
    assert len(events) == 4 and events[-1] == "[DONE]"
    assert all("usage" not in e for e in events[:-1])


@pytest.mark.asyncio
async def test_chat_completions(client: TestClient) -> None:
    """Chat completions apply the chat template, stream and non-stream."""
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": "What is a radix tree?"}]
    r = await client.post("/v1/chat/completions", json={"messages": messages,
                                                        "max_tokens": 3})
    assert r.status == 200
    body = await r.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {"role": "assistant",
                                             "content": filler_text(0, 3)}
    assert body["usage"]["completion_tokens"] == 3
    r = await client.post("/v1/chat/completions", json={
        "messages": messages, "max_completion_tokens": 4, "stream": True,
        "stream_options": {"include_usage": True}})
    events = sse_events(await r.text())
    assert events[-1] == "[DONE]"
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    content = events[1:-2]
    assert len(content) == 4
    assert all(e["object"] == "chat.completion.chunk" for e in content)
    assert "".join(e["choices"][0]["delta"]["content"] for e in content) == filler_text(0, 4)
    assert content[-1]["choices"][0]["finish_reason"] == "length"
    usage = events[-2]["usage"]
    assert usage["prompt_tokens_details"]["cached_tokens"] == usage["prompt_tokens"] - 1


@pytest.mark.asyncio
async def test_generate(client: TestClient) -> None:
    """SGLang's /generate answers with text and meta_info, streamed cumulatively or not."""
    r = await client.post("/generate", json={"text": PROMPT,
                                             "sampling_params": {"max_new_tokens": 6}})
    assert r.status == 200
    body = await r.json()
    assert body["text"] == filler_text(0, 6)
    meta = body["meta_info"]
    assert meta["completion_tokens"] == 6
    assert meta["prompt_tokens"] == len(client.app[WORKER_KEY].tokenizer.encode(PROMPT))
    assert meta["cached_tokens"] == 0
    assert meta["e2e_latency"] > 0
    r = await client.post("/generate", json={"text": PROMPT, "stream": True,
                                             "sampling_params": {"max_new_tokens": 3}})
    events = sse_events(await r.text())
    assert events[-1] == "[DONE]"
    assert [e["text"] for e in events[:-1]] == [filler_text(0, k) for k in (1, 2, 3)]
    assert events[-2]["meta_info"]["cached_tokens"] == meta["prompt_tokens"] - 1
    assert events[-2]["meta_info"]["finish_reason"] == {"type": "length", "length": 3}
    r = await client.post("/generate", json={"input_ids": [1, 2, 3, 4],
                                             "sampling_params": {"max_new_tokens": 2}})
    assert (await r.json())["meta_info"]["prompt_tokens"] == 4


@pytest.mark.asyncio
async def test_flush_cache(client: TestClient) -> None:
    """/flush_cache empties the radix cache when idle and refuses while a request runs."""
    await client.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 2})
    ew = client.app[WORKER_KEY]
    assert ew.worker is not None and ew.worker.cache.total > 0
    r = await client.post("/flush_cache")
    assert r.status == 200
    assert ew.worker.cache.total == 0
    r = await client.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 2})
    assert (await r.json())["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    busy = asyncio.ensure_future(client.post("/v1/completions",
                                             json={"prompt": PROMPT, "max_tokens": 150}))
    while not ew.worker.running:
        await asyncio.sleep(0.001)
    r = await client.post("/flush_cache")
    assert r.status == 400
    assert "pending requests" in (await r.json())["error"]["message"]
    assert (await busy).status == 200


@pytest.mark.asyncio
@pytest.mark.parametrize(("path", "payload", "needle"), [
    ("/v1/completions", b"{not json", "not valid JSON"),
    ("/v1/completions", b"[1, 2]", "JSON object"),
    ("/v1/completions", {"max_tokens": 3}, "'prompt' is required"),
    ("/v1/completions", {"prompt": "hi", "max_tokens": 0}, ">= 1"),
    ("/v1/completions", {"prompt": "hi", "max_tokens": "3"}, "integer"),
    ("/v1/completions", {"prompt": "", "max_tokens": 3}, "empty"),
    ("/v1/completions", {"prompt": ["a", ""]}, "empty"),
    ("/v1/completions", {"prompt": ["a", "word " * 9000]}, "KV pool"),
    ("/v1/completions", {"prompt": "hi", "n": 2}, "n = 1"),
    ("/v1/completions", {"prompt": "word " * 9000, "max_tokens": 3}, "KV pool"),
    ("/v1/chat/completions", {"messages": []}, "messages"),
    ("/v1/chat/completions", {"messages": [{"role": "user"}]}, "content"),
    ("/generate", {"sampling_params": {"max_new_tokens": 2}}, "'text' or 'input_ids'"),
    ("/generate", {"text": "hi", "sampling_params": {"max_new_tokens": -1}}, ">= 1"),
    ("/generate", {"input_ids": [1, -5]}, "token ids"),
])
async def test_bad_input_is_400_json(client: TestClient, path: str, payload: Any,
                                     needle: str) -> None:
    """Bad requests get a 400 with an OpenAI-style error body, and the worker goes on."""
    if isinstance(payload, bytes):
        r = await client.post(path, data=payload,
                              headers={"Content-Type": "application/json"})
    else:
        r = await client.post(path, json=payload)
    assert r.status == 400
    err = (await r.json())["error"]
    assert needle in err["message"]
    assert err["type"] == "invalid_request_error"
    r = await client.post("/v1/completions", json={"prompt": "still alive", "max_tokens": 1})
    assert r.status == 200


@pytest.mark.asyncio
async def test_batch_is_served_whole_or_not_at_all(client: TestClient) -> None:
    """A batch is one request per prompt (choices by index, usage summed); a batch with
    one prompt that cannot fit queues none of it."""
    ew = client.app[WORKER_KEY]
    r = await client.post("/v1/completions", json={"prompt": [PROMPT, "short one"],
                                                   "max_tokens": 3})
    assert r.status == 200
    body = await r.json()
    assert [c["text"] for c in body["choices"]] == [filler_text(0, 3)] * 2
    n = len(ew.tokenizer.encode(PROMPT)) + len(ew.tokenizer.encode("short one"))
    assert body["usage"]["prompt_tokens"] == n and body["usage"]["completion_tokens"] == 6
    r = await client.post("/generate", json={"text": ["a b", PROMPT], "stream": True,
                                             "sampling_params": {"max_new_tokens": 2}})
    events = sse_events(await r.text())
    assert events[-1] == "[DONE]"
    indices = [e["index"] for e in events[:-1]]
    assert indices == sorted(indices) and set(indices) == {0, 1}  # one prompt after another
    for i in (0, 1):  # cumulative text; a prompt done before its turn comes in one chunk
        last = [e for e in events[:-1] if e["index"] == i][-1]
        assert last["text"] == filler_text(0, 2)
        assert last["meta_info"]["finish_reason"] == {"type": "length", "length": 2}
    assert ew.worker is not None
    steps = ew.worker.steps
    r = await client.post("/v1/completions", json={"prompt": ["a", "word " * 9000]})
    assert r.status == 400 and ew.worker.steps == steps and not ew.pending


@pytest.mark.asyncio
async def test_unknown_route_is_json(client: TestClient) -> None:
    """An unknown path is a JSON 404, not an HTML page."""
    r = await client.get("/v2/nothing")
    assert r.status == 404
    assert "error" in await r.json()


@pytest.mark.asyncio
async def test_concurrent_requests_all_complete(client: TestClient) -> None:
    """Eight simultaneous requests (stream and not) all complete, batched by the worker."""
    ew = client.app[WORKER_KEY]
    assert ew.worker is not None
    steps0 = ew.worker.steps

    async def one(i: int) -> int:
        body = {"prompt": f"request {i}: " + PROMPT, "max_tokens": 20, "stream": i % 2 == 1}
        r = await client.post("/v1/completions", json=body)
        assert r.status == 200
        if i % 2:
            events = sse_events(await r.text())
            assert events[-1] == "[DONE]"
            return len(events) - 1
        return int((await r.json())["usage"]["completion_tokens"])

    counts = await asyncio.gather(*(one(i) for i in range(8)))
    assert counts == [20] * 8
    assert ew.worker.steps - steps0 < 8 * 20  # decodes were batched
    assert not ew.pending and ew.worker.running == 0


@pytest.mark.asyncio
@pytest.mark.parametrize("cancel", [False, True])
async def test_client_disconnect_mid_stream(cancel: bool, monkeypatch: Any) -> None:
    """A client that leaves mid-stream does not break the worker; its request finishes
    (whether aiohttp cancels the handler or the handler's next write fails)."""
    sends: list[bool] = []
    real_send = http_api._send

    async def spy(resp: web.StreamResponse, payload: Any) -> bool:
        ok = await real_send(resp, payload)
        sends.append(ok)
        return ok

    monkeypatch.setattr(http_api, "_send", spy)
    app = create_app(EmulatedConfig(speed=200, capacity=8192))
    runner = web.AppRunner(app, handler_cancellation=cancel)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    ew = app[WORKER_KEY]
    try:
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as s:
            r = await s.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 300,
                                                      "stream": True})
            await r.content.readline()  # the first chunk
            r.close()
            for _ in range(2000):
                if not ew.pending:
                    break
                await asyncio.sleep(0.005)
            assert ew.worker is not None
            assert not ew.pending and ew.worker.running == 0
            assert len(sends) < 300  # the stream stopped early
            if not cancel:
                assert sends[-1] is False  # a write failed and was swallowed
            async with s.post("/v1/completions", json={"prompt": PROMPT,
                                                       "max_tokens": 2}) as r2:
                assert r2.status == 200
    finally:
        await runner.cleanup()


@pytest.mark.asyncio
async def test_models_and_health(client: TestClient) -> None:
    """/v1/models lists the model name; /health and /health_generate are 200."""
    r = await client.get("/v1/models")
    data = (await r.json())["data"]
    assert [m["id"] for m in data] == ["kvroute-emulated"]
    for path in ("/health", "/health_generate"):
        assert (await client.get(path)).status == 200


@pytest.mark.asyncio
async def test_real_socket() -> None:
    """The app serves over a real TCP socket (AppRunner + TCPSite on port 0)."""
    runner = web.AppRunner(create_app(EmulatedConfig(speed=50, model_name="m")))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        server = site._server
        assert server is not None
        port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as s:
            async with s.post("/v1/completions", json={"prompt": PROMPT,
                                                       "max_tokens": 3}) as r:
                assert r.status == 200
                assert (await r.json())["model"] == "m"
            async with s.get("/metrics") as r:
                assert "sglang:num_running_reqs" in await r.text()
    finally:
        await runner.cleanup()


def test_speed_scales_step_times() -> None:
    """--speed divides every step time and keeps the KV pool."""
    model = load_profile("l40-llama3-8b")
    fast = model.at_speed(4.0)
    assert fast.kv_pool_tokens == model.kv_pool_tokens
    assert fast.step_time(300, 1e4, 5000) == pytest.approx(model.step_time(300, 1e4, 5000) / 4)
    with pytest.raises(ConfigError):
        EmulatedConfig(speed=0)
    with pytest.raises(ConfigError):
        EmulatedConfig(eviction="optimal")


def test_cli_parser() -> None:
    """`kvroute worker` parses the documented flags and rejects a run without --emulate."""
    import argparse

    ap = argparse.ArgumentParser()
    worker_cli.add_parser(ap.add_subparsers())
    args = ap.parse_args(["worker", "--emulate", "--profile", "l40-llama3-8b", "--eviction",
                          "rlt", "--port", "30001", "--capacity", "4096", "--seed", "1",
                          "--speed", "2"])
    assert (args.emulate, args.eviction, args.port, args.capacity, args.speed) == \
        (True, "rlt", 30001, 4096, 2.0)
    args = ap.parse_args(["worker"])
    with pytest.raises(ConfigError, match="--emulate"):
        args.func(args)


@pytest.mark.asyncio
async def test_lora_adapters_take_slots_and_are_listed(monkeypatch: pytest.MonkeyPatch) -> None:
    """With --lora-modules and --max-loras 1: /v1/models lists the adapters under the
    model, /metrics reports the cap as vLLM does (what the router reads), a request names
    its adapter by ``model`` (SGLang: ``lora_path``), and one for a second adapter waits
    while the first adapter's runs, as the base model's does not."""
    from kvroute.server.engine_metrics import engine_load
    from kvroute.worker.emulated import EmulatedWorker

    app = create_app(EmulatedConfig(speed=0.001, capacity=8192, lora_modules=("a", "b"),
                                    max_loras=1))
    asked: list[str | None] = []
    submit = EmulatedWorker.submit

    def spy(self: EmulatedWorker, prompts: Any, max_tokens: int,
            adapter: str | None = None) -> Any:
        asked.append(adapter)
        return submit(self, prompts, max_tokens, adapter)

    async with TestClient(TestServer(app)) as c:
        models = await (await c.get("/v1/models")).json()
        assert [(m["id"], m.get("parent")) for m in models["data"]] == [
            ("kvroute-emulated", None), ("a", "kvroute-emulated"), ("b", "kvroute-emulated")]
        load = engine_load(await (await c.get("/metrics")).text())
        assert load is not None and load.max_loras == 1
        ew = app[WORKER_KEY]
        ids = [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
        for prompt, adapter in zip(ids, ("a", "b", None), strict=True):  # queued at once
            ew.submit([prompt], 50, adapter)
        await asyncio.sleep(0.05)  # the first step has started (and lasts long)
        w = ew.worker
        assert {j.req.adapter for j in w.prefilling} == {"a", None}
        assert [j.req.adapter for j in w.waiting] == ["b"]
        monkeypatch.setattr(EmulatedWorker, "submit", spy)
        for path, body in (
                ("/v1/completions", {"model": "b", "prompt": "x", "max_tokens": 1}),
                ("/v1/completions", {"model": "kvroute-emulated", "prompt": "x",
                                     "max_tokens": 1}),
                ("/generate", {"text": "x", "lora_path": "a",
                               "sampling_params": {"max_new_tokens": 1}})):
            n = len(asked)
            task = asyncio.create_task(c.post(path, json=body))
            for _ in range(500):  # until the handler has queued it (it never finishes here)
                if len(asked) > n:
                    break
                await asyncio.sleep(0.01)
            task.cancel()
        assert asked == ["b", None, "a"]
    with pytest.raises(ConfigError, match="adapter"):
        EmulatedConfig(lora_modules=("kvroute-emulated",))
