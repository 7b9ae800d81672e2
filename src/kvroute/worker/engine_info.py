"""What other routers ask an engine besides generation, so that every peer's cache-aware
mode can run against kvroute's emulated workers.

Contract (the emulated worker's tokenizer and chat template, as its generation uses):

* vLLM: ``POST /tokenize`` (``{"prompt": str}`` or ``{"messages": [...]}``) answers
  ``{"count", "max_model_len", "tokens", "token_strs": null}``; ``POST /detokenize``
  (``{"tokens": [int]}``) answers ``{"prompt": str}``; ``POST
  /v1/chat/completions/render`` and ``/v1/completions/render`` answer without generating,
  in vLLM's list form: ``[conversation, [{"prompt_token_ids": [...]}]]`` for chat,
  ``[{"prompt_token_ids": [...]}, ...]`` (one per prompt) for completions.
* SGLang: ``GET /get_model_info`` (also ``/model_info``) answers ``{"model_path",
  "tokenizer_path", "is_generation"}``; ``GET /get_server_info`` (also ``/server_info``)
  the server's settings: ``max_total_num_tokens`` (the KV pool), ``chunked_prefill_size``,
  ``max_running_requests``, ``page_size``, ``version``, and ``dp_size`` with more than
  one data-parallel rank (every rank has the pool and settings given).
* Bad input is a 400 (:mod:`kvroute.protocol.request_body` reads the prompts).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from kvroute.protocol.request_body import BadRequest, json_body, prompts_of
from kvroute.worker.emulated import EmulatedWorker
from kvroute.workloads.tokenizer import render_ids

__all__ = ["add_info_routes"]


def add_info_routes(app: web.Application, key: web.AppKey[EmulatedWorker]) -> None:
    """Register this module's routes on the emulated worker's app."""

    def worker(request: web.Request) -> EmulatedWorker:
        return request.app[key]

    async def body(request: web.Request) -> dict[str, Any]:
        return json_body(await request.read())

    async def tokenize(request: web.Request) -> web.Response:
        b, ew = await body(request), worker(request)
        if "messages" in b:
            ids = ew.prompts.units("chat", b)
        elif isinstance(b.get("prompt"), str):
            ids = ew.prompts.units("completions", {"prompt": b["prompt"]})
        else:
            raise BadRequest("/tokenize needs 'prompt' (a string) or 'messages'")
        return web.json_response({"count": len(ids), "max_model_len": ew.capacity,
                                  "tokens": ids.tolist(), "token_strs": None})

    async def detokenize(request: web.Request) -> web.Response:
        tokens = (await body(request)).get("tokens")
        if not isinstance(tokens, list) or not all(
                isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in tokens):
            raise BadRequest("/detokenize needs 'tokens', a list of token ids")
        return web.json_response({"prompt": render_ids(worker(request).tokenizer, tokens)})

    async def render_chat(request: web.Request) -> web.Response:
        b = await body(request)
        ids = worker(request).prompts.units("chat", b)
        return web.json_response([b["messages"], [{"prompt_token_ids": ids.tolist()}]])

    async def render_completions(request: web.Request) -> web.Response:
        b, ew = await body(request), worker(request)
        return web.json_response([{"prompt_token_ids": ew.prompts.encode(p).tolist()}
                                  for p in prompts_of("completions", b)])

    async def model_info(request: web.Request) -> web.Response:
        return web.json_response({"model_path": worker(request).config.model_name,
                                  "tokenizer_path": worker(request).config.tokenizer,
                                  "is_generation": True})

    async def server_info(request: web.Request) -> web.Response:
        ew = worker(request)
        info: dict[str, Any] = {
            "model_path": ew.config.model_name, "max_total_num_tokens": ew.capacity,
            "chunked_prefill_size": ew.config.chunk_size,
            "max_running_requests": ew.config.max_running, "page_size": 1,
            "version": "kvroute-emulated"}
        if ew.config.dp_size > 1:
            info["dp_size"] = ew.config.dp_size
        return web.json_response(info)

    app.router.add_post("/tokenize", tokenize)
    app.router.add_post("/detokenize", detokenize)
    app.router.add_post("/v1/chat/completions/render", render_chat)
    app.router.add_post("/v1/completions/render", render_completions)
    for path in ("/get_model_info", "/model_info"):
        app.router.add_get(path, model_info)
    for path in ("/get_server_info", "/server_info"):
        app.router.add_get(path, server_info)
