"""The emulated worker's HTTP API: SGLang's and vLLM's endpoints in front of an
:class:`~kvroute.worker.emulated.EmulatedWorker`, or of ``EmulatedConfig.dp_size`` of
them (data-parallel ranks, :class:`~kvroute.worker.data_parallel.DataParallelWorker`)
(:func:`create_app`, an aiohttp app whose ranks start with it).

Contract:

* Endpoints: ``POST /v1/completions``, ``POST /v1/chat/completions`` (SSE when
  ``stream``; ``stream_options.include_usage`` adds a usage chunk), ``POST /generate``
  (SGLang native), ``POST /v1/responses`` and ``GET /v1/responses/{id}`` (below),
  ``GET /v1/models``, ``GET /health`` and ``GET /health_generate`` (503
  until the worker has started), ``POST /flush_cache`` (400 while requests are queued or
  running), ``GET /metrics`` (:mod:`kvroute.worker.exported_metrics`), and what other
  routers ask (tokenize, render, server and model info: :mod:`kvroute.worker.engine_info`).
  ``app[WORKER_KEY]`` is rank 0's engine (the only one without data parallelism),
  ``app[RANKS_KEY]`` the :class:`DataParallelWorker` of all ranks.
* Data parallelism: each request goes whole (a batch too) to one rank: the one its
  ``X-data-parallel-rank`` header names (not an integer in ``[0, dp_size)``: a 400), else
  the one vLLM's balancer would pick (:class:`DataParallelWorker`). ``/flush_cache``
  flushes every rank, ``/health`` is 200 once all have started, ``/metrics`` labels each
  rank's series with its rank.
* Requests are read by :mod:`kvroute.protocol.request_body`: what it refuses is a 400.
  ``max_tokens`` defaults to ``EmulatedConfig.default_max_tokens``; only ``n = 1`` is
  served. The emulated model has no end of sequence of its own: a request with a
  minimum (vLLM's ``min_tokens``, SGLang's ``min_new_tokens``, at most ``max_tokens``)
  ends right at it, as if the end of sequence came there.
* A batch (completions, /generate) is served whole, each prompt a request of its own on
  the SimWorker: completions answer with one choice per prompt (its ``index``) and the
  usage summed; /generate with a list of results when there is more than one prompt.
  Streamed, the chunks come one prompt after another, each with its ``index``.
* Responses: OpenAI's ``text_completion`` / ``chat.completion`` objects with ``usage``
  (``prompt_tokens_details.cached_tokens``); SGLang's ``text`` and ``meta_info``
  (``cached_tokens``; cumulative text when streamed). Every stream ends with
  ``data: [DONE]``.
* The Responses API, as vLLM serves it with its response store on: the input is read as
  chat messages (:func:`~kvroute.protocol.request_body.responses_messages`); a response is
  stored unless ``store`` is false (the last :data:`STORED` of them, per server: its
  ranks share them), and ``previous_response_id`` continues a stored one: the prompt is
  its conversation (without its instructions) and reply, then the new input, after the
  new ``instructions``; an id this server did not store is a 404. Ids are random
  (``resp_`` and 32 hex digits), unique across workers. Streamed: ``response.created``,
  one ``response.output_text.delta`` per token, ``response.completed`` (with ``usage``:
  ``input_tokens``, ``input_tokens_details.cached_tokens``, ``output_tokens``), each an
  ``event:`` and a ``data:`` line, and no ``[DONE]``.
* Errors are JSON (:func:`kvroute.protocol.response_body.error_body`): bad input 400,
  unknown routes 404, a bug 500 (logged; no traceback is sent). A client that goes away
  mid-stream does not affect the worker: its requests run to completion.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from kvroute.protocol.request_body import (
    PATHS,
    RANK_HEADER,
    BadRequest,
    Messages,
    adapter_of,
    include_usage,
    json_body,
    max_tokens_of,
    min_tokens_of,
    previous_response_of,
    prompts_of,
    responses_messages,
    streamed,
)
from kvroute.protocol.response_body import DONE, error_body
from kvroute.sim.worker import Job
from kvroute.worker.data_parallel import DataParallelWorker
from kvroute.worker.emulated import (
    EmulatedConfig,
    EmulatedWorker,
    Pending,
    filler_piece,
    filler_text,
)
from kvroute.worker.engine_info import add_info_routes

__all__ = ["RANKS_KEY", "STORED", "WORKER_KEY", "create_app"]

log = logging.getLogger(__name__)

WORKER_KEY = web.AppKey("kvroute_emulated_worker", EmulatedWorker)  # rank 0
RANKS_KEY = web.AppKey("kvroute_emulated_ranks", DataParallelWorker)
# stored Responses API responses: id -> (the conversation with its reply, the response)
STORE_KEY = web.AppKey("kvroute_emulated_responses", OrderedDict)
STORED = 4096


def _error(message: str, status: int = 400, kind: str = "invalid_request_error") -> web.Response:
    return web.json_response(error_body(message, kind, status), status=status)


# -------------------------------------------------------------------- requests
def _ranks(request: web.Request) -> DataParallelWorker:
    dp = request.app[RANKS_KEY]
    if not dp.started:
        raise web.HTTPServiceUnavailable(text="the worker is starting")
    return dp


async def _submit(request: web.Request, route: str,
                  body: dict[str, Any] | None = None, messages: Messages | None = None
                  ) -> tuple[dict[str, Any], EmulatedWorker, list[Pending], str]:
    """The request's body, the rank it went to, its prompts (``messages``, if given)
    queued there, and why their outputs end: "stop" at a minimum (the emulated end of
    sequence), else "length"."""
    dp = _ranks(request)
    rank = dp.requested_rank(request.headers.get(RANK_HEADER))
    ew = dp.ranks[0]  # the ranks share the config and the tokenizer
    if body is None:
        body = json_body(await request.read())
    prompts = [ew.prompts.encode(p) for p in
               (prompts_of(route, body) if messages is None else [messages])]
    cap, least = max_tokens_of(route, body), min_tokens_of(route, body)
    if least is not None and cap is not None and least > cap:
        raise BadRequest(f"the minimum output ({least}) exceeds max_tokens ({cap})")
    max_tokens = least if least is not None else cap or ew.config.default_max_tokens
    n = body.get("n", 1)
    if n is not None and n != 1:
        raise BadRequest(f"only n = 1 is supported, got n = {n!r}")
    ends = "stop" if least is not None and least != cap else "length"
    adapter = adapter_of(route, body, frozenset(ew.config.lora_modules))
    ew = dp.pick(rank)  # chosen and queued at once: the balancer sees every earlier request
    return body, ew, ew.submit(prompts, max_tokens, adapter), ends


async def _finished(ps: list[Pending]) -> None:
    """Wait for every request (their futures survive the handler's cancellation)."""
    for p in ps:
        await asyncio.shield(p.done)


# -------------------------------------------------------------------- responses
def _usage(jobs: list[Job]) -> dict[str, Any]:
    n = sum(j.req.prompt_len for j in jobs)
    out = sum(j.req.output_len for j in jobs)
    return {"prompt_tokens": n, "completion_tokens": out, "total_tokens": n + out,
            "prompt_tokens_details": {"cached_tokens": sum(j.cached for j in jobs)}}


async def _open_sse(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                       "Cache-Control": "no-cache"})
    await resp.prepare(request)
    return resp


async def _send(resp: web.StreamResponse, payload: Any, event: str | None = None) -> bool:
    """Write one SSE event (named ``event``, if given); False when the client has gone
    away."""
    data = payload if isinstance(payload, str) else json.dumps(payload)
    head = f"event: {event}\n" if event else ""
    try:
        await resp.write(f"{head}data: {data}\n\n".encode())
    except (ConnectionError, RuntimeError):  # ConnectionResetError: the client left
        return False
    return True


async def _close_sse(resp: web.StreamResponse) -> None:
    """Send ``data: [DONE]`` and end the stream (quietly if the client has gone)."""
    if await _send(resp, DONE.decode()):
        with contextlib.suppress(ConnectionError, RuntimeError):
            await resp.write_eof()


async def _tokens(p: Pending) -> AsyncIterator[tuple[int, int]]:
    """Yield ``(start, end)`` ranges of newly generated tokens until the request is done."""
    sent = 0
    total = p.job.req.output_len
    while sent < total:
        await p.progress.wait()
        p.progress.clear()
        now = p.job.generated
        if now > sent:
            yield sent, now
            sent = now


async def _openai(request: web.Request, route: str) -> web.StreamResponse:
    body, ew, ps, ends = await _submit(request, route)
    chat = route == "chat"
    max_tokens = ps[0].job.req.output_len
    rid = f"{'chatcmpl' if chat else 'cmpl'}-{ps[0].job.req.rid}"
    created = int(time.time())
    model = ew.config.model_name
    if not streamed(body):
        await _finished(ps)
        text = filler_text(0, max_tokens)
        choices: list[dict[str, Any]] = []
        for i in range(len(ps)):
            choice: dict[str, Any] = {"index": i, "finish_reason": ends, "logprobs": None}
            if chat:
                choice["message"] = {"role": "assistant", "content": text}
            else:
                choice["text"] = text
            choices.append(choice)
        return web.json_response({"id": rid, "object": "chat.completion" if chat
                                  else "text_completion", "created": created, "model": model,
                                  "choices": choices, "usage": _usage([p.job for p in ps])})
    chunk_obj = "chat.completion.chunk" if chat else "text_completion"
    resp = await _open_sse(request)

    def chunk(choice: dict[str, Any]) -> dict[str, Any]:
        return {"id": rid, "object": chunk_obj, "created": created, "model": model,
                "choices": [choice]}

    alive = True
    for index, p in enumerate(ps):
        async for start, end in _tokens(p):
            if chat and start == 0 and alive:  # the role chunk goes out with the first token
                alive = await _send(resp, chunk({"index": index, "delta": {
                    "role": "assistant", "content": ""}, "logprobs": None,
                    "finish_reason": None}))
            for i in range(start, end):
                if not alive:
                    break
                fin = ends if i == max_tokens - 1 else None
                piece = filler_piece(i)
                c: dict[str, Any] = {"index": index, "logprobs": None, "finish_reason": fin}
                if chat:
                    c["delta"] = {"content": piece}
                else:
                    c["text"] = piece
                alive = await _send(resp, chunk(c))
    await _finished(ps)
    if alive and include_usage(body):
        alive = await _send(resp, {"id": rid, "object": chunk_obj, "created": created,
                                   "model": model, "choices": [],
                                   "usage": _usage([p.job for p in ps])})
    if alive:
        await _close_sse(resp)
    return resp


async def completions(request: web.Request) -> web.StreamResponse:
    """``POST /v1/completions`` (OpenAI)."""
    return await _openai(request, "completions")


async def chat_completions(request: web.Request) -> web.StreamResponse:
    """``POST /v1/chat/completions`` (OpenAI)."""
    return await _openai(request, "chat")


async def generate(request: web.Request) -> web.StreamResponse:
    """``POST /generate`` (SGLang native: ``text`` or ``input_ids``, ``sampling_params``)."""
    body, ew, ps, ends = await _submit(request, "generate")
    max_tokens = ps[0].job.req.output_len

    def meta(p: Pending, done: bool, generated: int) -> dict[str, Any]:
        job = p.job
        return {"id": str(job.req.rid), "prompt_tokens": job.req.prompt_len,
                "completion_tokens": generated, "cached_tokens": job.cached,
                "finish_reason": ({"type": ends, "length": max_tokens} if ends == "length"
                                  else {"type": ends}) if done else None,
                "e2e_latency": ew.now() - p.t0}

    if not streamed(body):
        await _finished(ps)
        results = [{"text": filler_text(0, max_tokens), "meta_info": meta(p, True, max_tokens)}
                   for p in ps]
        return web.json_response(results if len(results) > 1 else results[0])
    resp = await _open_sse(request)
    alive = True
    for index, p in enumerate(ps):
        async for _, end in _tokens(p):
            if alive:
                alive = await _send(resp, {"text": filler_text(0, end), "index": index,
                                           "meta_info": meta(p, end == max_tokens, end)})
    await _finished(ps)
    if alive:
        await _close_sse(resp)
    return resp


def _conversation(request: web.Request, body: dict[str, Any]) -> Messages:
    """A Responses API request's prompt as messages (the module doc)."""
    new = responses_messages(body)
    prev = previous_response_of(body)
    if prev is None:
        return new
    stored = request.app[STORE_KEY].get(prev)
    if stored is None:
        raise web.HTTPNotFound(reason=f"Response with id '{prev}' not found.")
    system = new[:1] if new[0]["role"] == "system" else []
    history: Messages = stored[0]
    return system + history + new[len(system):]


async def responses(request: web.Request) -> web.StreamResponse:
    """``POST /v1/responses`` (OpenAI's Responses API; the module doc)."""
    body = json_body(await request.read())
    messages = _conversation(request, body)
    body, ew, ps, ends = await _submit(request, "responses", body, messages)
    (p,) = ps
    rid, model, created = f"resp_{uuid.uuid4().hex}", ew.config.model_name, int(time.time())
    msg_id = f"msg_{rid[5:]}"
    n = p.job.req.output_len

    def response(status: str, text: str | None) -> dict[str, Any]:
        job = p.job
        out = [] if text is None else [{
            "type": "message", "id": msg_id, "role": "assistant", "status": "completed",
            "content": [{"type": "output_text", "text": text, "annotations": []}]}]
        usage = None if text is None else {
            "input_tokens": job.req.prompt_len,
            "input_tokens_details": {"cached_tokens": job.cached}, "output_tokens": n,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": job.req.prompt_len + n}
        return {"id": rid, "object": "response", "created_at": created, "model": model,
                "status": status, "incomplete_details": None if ends == "stop" else {
                    "reason": "max_output_tokens"} if text is not None else None,
                "previous_response_id": body.get("previous_response_id"), "output": out,
                "usage": usage}

    def keep(final: dict[str, Any]) -> None:
        if body.get("store", True) is False:
            return
        store = request.app[STORE_KEY]
        reply = {"role": "assistant", "content": filler_text(0, n)}
        store[rid] = ([m for m in messages if m["role"] != "system"] + [reply], final)
        while len(store) > STORED:
            store.popitem(last=False)

    if not streamed(body):
        await _finished(ps)
        final = response("completed", filler_text(0, n))
        keep(final)
        return web.json_response(final)
    resp = await _open_sse(request)
    seq = 0
    alive = await _send(resp, {"type": "response.created", "sequence_number": seq,
                               "response": response("in_progress", None)}, "response.created")
    async for start, end in _tokens(p):
        for i in range(start, end):
            if alive:
                seq += 1
                alive = await _send(resp, {
                    "type": "response.output_text.delta", "sequence_number": seq,
                    "item_id": msg_id, "output_index": 0, "content_index": 0,
                    "delta": filler_piece(i)}, "response.output_text.delta")
    await _finished(ps)
    final = response("completed", filler_text(0, n))
    keep(final)
    if alive and await _send(resp, {"type": "response.completed", "sequence_number": seq + 1,
                                    "response": final}, "response.completed"):
        with contextlib.suppress(ConnectionError, RuntimeError):
            await resp.write_eof()
    return resp


async def stored_response(request: web.Request) -> web.Response:
    """``GET /v1/responses/{id}``: a stored response."""
    stored = request.app[STORE_KEY].get(request.match_info["id"])
    if stored is None:
        raise web.HTTPNotFound(reason=f"Response with id '{request.match_info['id']}' "
                                      "not found.")
    return web.json_response(stored[1])


async def models(request: web.Request) -> web.Response:
    """``GET /v1/models``."""
    ew = request.app[WORKER_KEY]
    name = ew.config.model_name
    return web.json_response({"object": "list", "data": [{
        "id": name, "object": "model", "created": 0, "owned_by": "kvroute",
        "root": name, "max_model_len": ew.capacity}, *({  # LoRA adapters, as vLLM lists them
            "id": a, "object": "model", "created": 0, "owned_by": "kvroute", "root": a,
            "parent": name, "max_model_len": ew.capacity} for a in ew.config.lora_modules)]})


async def health(request: web.Request) -> web.Response:
    """``GET /health`` and ``/health_generate``: 200 once every rank runs."""
    if not request.app[RANKS_KEY].started:
        return _error("the worker is starting", 503, "service_unavailable")
    return web.Response(text="")


async def flush_cache(request: web.Request) -> web.Response:
    """``POST /flush_cache`` (SGLang): clear every rank's radix cache when nothing is in
    flight."""
    reason = request.app[RANKS_KEY].flush()
    if reason is not None:
        return _error(reason)
    return web.Response(text="Cache flushed.\nPlease check backend logs for more details. "
                             "(When there are running or waiting requests, the operation "
                             "will not be performed.)\n")


async def metrics(request: web.Request) -> web.Response:
    """``GET /metrics``: Prometheus text format."""
    body = request.app[RANKS_KEY].render_metrics()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


@web.middleware
async def _errors(request: web.Request,
                  handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                  ) -> web.StreamResponse:
    try:
        return await handler(request)
    except BadRequest as e:
        return _error(str(e))
    except web.HTTPException as e:
        if e.status < 400:
            raise
        kind = "not_found_error" if e.status == 404 else "invalid_request_error"
        return _error(e.reason if e.status in (404, 405) else e.text or e.reason,
                      e.status, kind)
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception as e:  # a bug: answer JSON, log the traceback here only
        log.exception("%s %s failed", request.method, request.path)
        return _error(f"internal error: {type(e).__name__}", 500, "internal_server_error")


def create_app(config: EmulatedConfig | None = None) -> web.Application:
    """The aiohttp app of an emulated worker: ``config.dp_size`` ranks (engines) behind
    it, their SimWorkers started with the app."""
    dp = DataParallelWorker(config or EmulatedConfig())
    app = web.Application(middlewares=[_errors])
    app[WORKER_KEY] = dp.ranks[0]
    app[RANKS_KEY] = dp
    app[STORE_KEY] = OrderedDict()

    async def start(app: web.Application) -> None:
        dp.start()

    async def stop(app: web.Application) -> None:
        dp.close()

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    app.router.add_post(PATHS["completions"], completions)
    app.router.add_post(PATHS["chat"], chat_completions)
    app.router.add_post(PATHS["generate"], generate)
    app.router.add_post(PATHS["responses"], responses)
    app.router.add_get(PATHS["responses"] + "/{id}", stored_response)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/health", health)
    app.router.add_get("/health_generate", health)
    app.router.add_post("/flush_cache", flush_cache)
    app.router.add_get("/metrics", metrics)
    add_info_routes(app, WORKER_KEY)
    return app
