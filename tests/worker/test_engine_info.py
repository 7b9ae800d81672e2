"""The emulated worker answers what other routers ask besides generation."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient, TestServer

from kvroute.worker.emulated import EmulatedConfig
from kvroute.worker.http_api import create_app


@pytest.mark.asyncio
async def test_tokenize_render_and_info_agree_with_generation() -> None:
    """/tokenize and the render routes give the ids the worker generates from (its usage
    counts them); detokenize inverts; the info routes report the worker's settings."""
    app = create_app(EmulatedConfig(speed=100, capacity=50_000, chunk_size=4096))
    async with TestClient(TestServer(app)) as client:
        messages = [{"role": "user", "content": "hello there, radix trees"}]
        tok = await (await client.post("/tokenize", json={"messages": messages})).json()
        assert tok["count"] == len(tok["tokens"]) > 0 and tok["max_model_len"] == 50_000
        chat = await (await client.post("/v1/chat/completions", json={
            "messages": messages, "max_tokens": 2})).json()
        assert chat["usage"]["prompt_tokens"] == tok["count"]
        rendered = await (await client.post("/v1/chat/completions/render",
                                            json={"messages": messages})).json()
        assert rendered == [messages, [{"prompt_token_ids": tok["tokens"]}]]
        plain = await (await client.post("/tokenize", json={"prompt": "abc def"})).json()
        comp = await (await client.post("/v1/completions/render",
                                        json={"prompt": ["abc def", [5, 6]]})).json()
        assert comp == [{"prompt_token_ids": plain["tokens"]}, {"prompt_token_ids": [5, 6]}]
        text = await (await client.post("/detokenize", json={"tokens": [1, 2]})).json()
        assert isinstance(text["prompt"], str) and text["prompt"]
        for path in ("/get_server_info", "/server_info"):
            info = await (await client.get(path)).json()
            assert info["max_total_num_tokens"] == 50_000
            assert info["chunked_prefill_size"] == 4096
        for path in ("/get_model_info", "/model_info"):
            assert (await (await client.get(path)).json())["is_generation"] is True
        for path, bad in (("/tokenize", {}), ("/detokenize", {"tokens": [-1]}),
                          ("/v1/chat/completions/render", {"messages": []})):
            resp = await client.post(path, json=bad)
            assert resp.status == 400
            assert (await resp.json())["error"]["message"]
