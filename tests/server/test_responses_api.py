"""OpenAI's Responses API through the router, in front of emulated workers that store
their responses (as vLLM does with its response store on): a continuation
(``previous_response_id``) goes to the worker that stored the response, streamed or not;
the stored response's own endpoints follow it; unknown ids and a lost worker give clear
errors."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp import web

from kvroute.protocol.request_body import BadRequest, PromptEncoder, prompts_of
from kvroute.protocol.response_body import SSEScanner, counts_of
from kvroute.routing import make_router_policy
from kvroute.routing.base import Feedback
from kvroute.server.app import RouterApp, ServeConfig, build_app
from kvroute.server.response_owners import ResponseOwners
from kvroute.worker import EmulatedConfig, create_app


async def _start(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


def _events(body: bytes) -> list[dict]:
    return [json.loads(line[6:]) for line in body.decode().splitlines()
            if line.startswith("data: ")]


@pytest.mark.asyncio
async def test_continuations_follow_the_worker_that_stored_the_response() -> None:
    workers = [await _start(create_app(EmulatedConfig(speed=50.0))) for _ in range(3)]
    urls = [u for _, u in workers]
    # round_robin would send each request to the next worker: only the affinity keeps
    # a conversation on its worker
    router = build_app(ServeConfig(worker_urls=urls, health_interval=0.2,
                                   failure_threshold=1, cooldown_s=60.0),
                       make_router_policy("round_robin"))
    await router.start("127.0.0.1", 0)
    base = f"http://127.0.0.1:{router.port}/v1/responses"
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(base, json={"input": "hello there",
                                             "max_output_tokens": 4}) as r:
                assert r.status == 200
                first = await r.json()
                owner = r.headers["X-Kvroute-Worker"]
            assert first["object"] == "response" and first["usage"]["output_tokens"] == 4
            prev, chain = first["id"], [owner]
            for turn in range(4):  # alternately streamed
                body = {"input": [{"role": "user", "content": [
                    {"type": "input_text", "text": f"and then {turn}"}]}],
                    "previous_response_id": prev, "max_output_tokens": 3,
                    "stream": turn % 2 == 1}
                async with http.post(base, json=body) as r:
                    assert r.status == 200
                    chain.append(r.headers["X-Kvroute-Worker"])
                    if body["stream"]:
                        events = _events(await r.read())
                        assert events[0]["type"] == "response.created"
                        assert events[-1]["type"] == "response.completed"
                        done = events[-1]["response"]
                    else:
                        done = await r.json()
                assert done["previous_response_id"] == prev
                assert done["usage"]["input_tokens_details"]["cached_tokens"] > 0  # its history
                prev = done["id"]
            assert chain == [owner] * 5
            # a new conversation goes where the policy says (round robin: elsewhere)
            async with http.post(base, json={"input": "another", "max_output_tokens": 2}) as r:
                assert r.status == 200 and r.headers["X-Kvroute-Worker"] != owner
            # the stored response's own endpoint follows it
            async with http.get(f"{base}/{prev}") as r:
                assert r.status == 200 and (await r.json())["id"] == prev
                assert r.headers["X-Kvroute-Worker"] == owner
            async with http.get(f"{base}/resp_unknown") as r:
                assert r.status == 404 and "not made through this router" in (
                    await r.json())["error"]["message"]
            # an id the router never saw is routed as any request; the engine answers 404
            async with http.post(base, json={"input": "x", "previous_response_id":
                                             "resp_elsewhere"}) as r:
                assert r.status == 404
            async with http.post(base, json={"input": "x", "previous_response_id": 7}) as r:
                assert r.status == 400
            # the owner goes away: its conversations fail (502 while the router finds
            # out, then 503 with the reason), never on another worker
            await workers[urls.index(owner)][0].cleanup()
            cont = {"input": "more", "previous_response_id": prev, "max_output_tokens": 2}
            async with http.post(base, json=cont) as r:
                assert r.status == 502 and owner in (await r.json())["error"]["message"]
            async with http.post(base, json=cont) as r:
                assert r.status == 503
                assert "stored response" in (await r.json())["error"]["message"]
            async with http.get(f"{base}/{prev}") as r:
                assert r.status == 503
            async with http.get(f"http://127.0.0.1:{router.port}/metrics") as r:
                assert 'kvroute_errors_total{kind="owner_unavailable"} 2.0' in await r.text()
    finally:
        await router.stop()
        for runner, _ in workers:
            await runner.cleanup()


def test_responses_input_reads_as_chat_messages() -> None:
    """``instructions`` first; strings, content parts and tool items become messages; a
    template that refuses them does not refuse the request (the router keys on their
    text)."""
    (msgs,) = prompts_of("responses", {"instructions": "sys", "input": [
        {"role": "user", "content": [{"type": "input_text", "text": "a"},
                                     {"type": "input_image", "image_url": "u"}]},
        {"type": "function_call", "name": "f", "arguments": "{}", "call_id": "c"},
        {"type": "function_call_output", "call_id": "c", "output": "42"}]})
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "tool"]
    assert msgs[1]["content"] == "a[input_image]" and '"output":"42"' in msgs[3]["content"]
    assert prompts_of("responses", {"input": "hi"}) == [[{"role": "user", "content": "hi"}]]
    for bad in ({"input": ""}, {"input": []}, {"input": [3]}, {"input": "x", "instructions": 1},
                {"input": [{"role": "user", "content": 5}]}):
        with pytest.raises(BadRequest):
            prompts_of("responses", bad)

    class Refusing:
        def render(self, messages: list) -> str:
            from kvroute.errors import ConfigError
            raise ConfigError("roles must alternate")

    enc = PromptEncoder(chat_template=Refusing())  # type: ignore[arg-type]
    units = enc.units("responses", {"input": "hi"})
    assert isinstance(units, np.ndarray) and len(units) > 0


def test_response_usage_and_id_are_read_from_bodies_and_streams() -> None:
    body = json.dumps({"id": "resp_1", "object": "response", "output": [], "usage": {
        "input_tokens": 10, "input_tokens_details": {"cached_tokens": 4},
        "output_tokens": 3}}).encode()
    u = counts_of(body)
    assert (u.prompt_tokens, u.completion_tokens, u.cached_tokens) == (10, 3, 4)
    s = SSEScanner(response_id=True)
    stream = (b'event: response.created\ndata: {"type":"response.created","response":'
              b'{"id":"resp_9","object":"response","status":"in_progress"}}\n\n'
              b'event: response.completed\ndata: {"type":"response.completed","response":'
              b'{"id":"resp_9","object":"response","usage":{"input_tokens":8,'
              b'"input_tokens_details":{"cached_tokens":2},"output_tokens":5}}}\n\n')
    for i in range(0, len(stream), 11):
        s.feed(stream[i:i + 11])
    s.close()
    assert s.response_id == "resp_9"
    assert (s.usage.prompt_tokens, s.usage.completion_tokens, s.usage.cached_tokens) == (8, 5, 2)


def test_owners_keep_the_most_recent_ids() -> None:
    owners = ResponseOwners(capacity=2)
    owners.record("a", "u1")
    owners.record("b", "u2")
    assert owners.owner("a") == "u1"  # read: now the most recent
    owners.record("c", "u3")
    assert owners.owner("b") is None and owners.owner("a") == "u1" and len(owners) == 2


@asynccontextmanager
async def _one_engine(engine: Any, body: dict[str, Any]) -> AsyncIterator[
        tuple[str, bytes, list[Feedback], RouterApp]]:
    """``learned`` in front of one engine that answers ``/v1/responses`` with ``engine``:
    ``body`` sent, yields the engine's URL, the answer, and the feedback the policy got
    once it came (the router still running)."""
    app = web.Application()
    app.router.add_post("/v1/responses", engine)
    runner, url = await _start(app)
    router = build_app(ServeConfig(worker_urls=[url], health_interval=0, metrics_interval=0),
                       make_router_policy("learned"))
    seen: list[Feedback] = []
    inner = router.router.policy.on_complete
    router.router.policy.on_complete = lambda fb: (seen.append(fb), inner(fb))  # type: ignore[method-assign]
    await router.start("127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession() as http, http.post(
                f"http://127.0.0.1:{router.port}/v1/responses", json=body) as r:
            assert r.status == 200
            answer = await r.read()
        for _ in range(100):
            if seen:
                break
            await asyncio.sleep(0.02)
        yield url, answer, seen, router
    finally:
        await router.stop()
        await runner.cleanup()


@pytest.mark.asyncio
async def test_a_streamed_responses_first_token_is_its_first_delta() -> None:
    """``response.created`` comes at once, before any token: the router's TTFT (what
    ``learned`` learns from) is the first ``*.delta`` event, and the usage of
    ``response.completed`` reaches the policy."""
    async def engine(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        head = {"id": "resp_x", "object": "response", "status": "in_progress"}
        await resp.write(b"event: response.created\ndata: "
                         + json.dumps({"type": "response.created", "response": head}).encode()
                         + b"\n\n")
        await asyncio.sleep(0.3)
        for piece in ("a", "b"):
            await resp.write(b"data: " + json.dumps({"type": "response.output_text.delta",
                                                     "delta": piece}).encode() + b"\n\n")
        done = {**head, "status": "completed", "usage": {
            "input_tokens": 5, "input_tokens_details": {"cached_tokens": 2},
            "output_tokens": 2}}
        await resp.write(b"data: " + json.dumps({"type": "response.completed",
                                                 "response": done}).encode() + b"\n\n")
        await resp.write_eof()
        return resp

    async with _one_engine(engine, {"input": "hi", "stream": True}) as (url, answer, seen,
                                                                          router):
        assert _events(answer)[-1]["type"] == "response.completed"
        (fb,) = seen
        assert fb.ok and fb.ttft_s is not None and fb.ttft_s >= 0.25
        assert (fb.cached_tokens, fb.output_tokens) == (2, 2)
        assert router.forwarder.owners.owner("resp_x") == url


@pytest.mark.asyncio
async def test_a_background_response_teaches_no_latency() -> None:
    """A background request is answered before it runs (``status`` ``queued``): its id is
    kept, and the policy is told it did not complete (no latency to learn from)."""
    async def engine(request: web.Request) -> web.Response:
        return web.json_response({"id": "resp_bg", "object": "response", "status": "queued",
                                  "output": [], "usage": None})

    async with _one_engine(engine, {"input": "hi", "background": True}) as (url, answer, seen,
                                                                              router):
        assert json.loads(answer)["status"] == "queued"
        (fb,) = seen
        assert not fb.ok and fb.e2e_s is None
        assert router.forwarder.owners.owner("resp_bg") == url
