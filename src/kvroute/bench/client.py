"""The load generator's HTTP client: one workload request as a request body, sent and its
reply read into a :class:`~kvroute.bench.results.RequestResult`.

Contract:

* Bodies (:func:`http_request`) are greedy, ``ignore_eos``, streamed with usage on, and
  read back by :mod:`kvroute.protocol.request_body` as the request's prompt and
  ``output_len`` (``max_tokens``). With ``max_tokens`` "none" or a cap "N"
  (``BenchConfig.max_tokens``, as chat clients send it) the output goes as the minimum
  instead (vLLM's ``min_tokens``, SGLang's ``min_new_tokens``), without ``ignore_eos``,
  beside no ``max_tokens`` or N (at least the output): the emulated worker ends each
  request at its minimum, a real engine at its model's end of sequence after it. A
  request that has only token ids (gsp, mooncake) is sent as ids (OpenAI ``prompt`` as
  a list of ints, SGLang ``input_ids``), so the engine sees exactly those tokens;
  chat-shaped requests go to chat as ``messages`` (to the other APIs as the
  Llama-3-like template's text). The Responses API (``responses``) gets ``input``: the
  messages, or the prompt's text as one user message; ``max_output_tokens`` in place of
  ``max_tokens``; no ``stream_options`` (its last event has the usage). A request for a
  LoRA adapter (``Request.adapter``: ``BenchConfig.adapters``) names it as the ``model``
  (SGLang's ``generate``: ``lora_path``).
* :func:`send_one` never raises: every failure (HTTP status, connection error, timeout,
  an error event, malformed or truncated stream) is in the result, with a short reason.
* Replies are read with :mod:`kvroute.protocol.response_body`: SSE ``data:`` lines,
  ``[DONE]``, error events, token usage. ``first_token`` is the first chunk carrying
  content (else the first data chunk), ``finish`` is ``[DONE]`` or the end of the body.
  A Responses API stream ends at ``response.completed`` (or ``response.incomplete``);
  ``response.failed`` and ``error`` events are errors.
  Prompt, cached and output tokens come from the usage the server reports, else the
  workload's prompt length, no cached count and the number of content chunks.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from typing import Any

import aiohttp

from kvroute.bench.config import BenchConfig
from kvroute.bench.results import NAN, RequestResult
from kvroute.errors import ConfigError
from kvroute.protocol.request_body import APIS, PATHS
from kvroute.protocol.response_body import (
    DONE,
    WORKER_HEADER,
    SSELines,
    error_message,
    usage_of,
)
from kvroute.workloads.adapters import adapter_for
from kvroute.workloads.request import Request, max_tokens_sent
from kvroute.workloads.tokenizer import apply_chat_template, pseudo_text

__all__ = ["check_endpoint", "http_request", "request_api", "send_one"]


def _prompt_text(req: Request) -> str:
    if req.text is not None:
        return req.text
    if req.messages:
        return apply_chat_template(req.messages)
    return pseudo_text(req.tokens)


def request_api(req: Request, forced: str | None) -> str:
    """The API ``req`` goes to: ``forced``, else chat for chat-shaped requests, else
    completions."""
    if forced is not None:
        return forced
    return "chat" if req.text is None and req.messages else "completions"


def _lengths(req: Request, max_tokens: str) -> dict[str, int | bool]:
    """The output's fields, in OpenAI's names (the module docstring)."""
    if max_tokens == "exact":
        return {"max_tokens": req.output_len, "ignore_eos": True}
    sent = max_tokens_sent(max_tokens, req.output_len)
    return {**({} if sent is None else {"max_tokens": sent}), "min_tokens": req.output_len}


def http_request(req: Request, api: str, model: str | None,
                 max_tokens: str = "exact") -> tuple[str, dict[str, Any]]:
    """(path, JSON body) of ``req`` for ``api`` (see the module docstring)."""
    ids_only = req.text is None and not req.messages  # e.g. gsp, mooncake: send the ids
    lengths = _lengths(req, max_tokens)
    if api == "generate":
        prompt: dict[str, Any] = ({"input_ids": req.tokens.tolist()} if ids_only
                                  else {"text": _prompt_text(req)})
        names = {"max_tokens": "max_new_tokens", "min_tokens": "min_new_tokens"}
        return PATHS[api], {
            **prompt, "stream": True, **({"lora_path": req.adapter} if req.adapter else {}),
            "sampling_params": {**{names.get(k, k): v for k, v in lengths.items()},
                                "temperature": 0}}
    body: dict[str, Any] = {
        "model": req.adapter or model or "default", **lengths, "temperature": 0,
        "stream": True, "stream_options": {"include_usage": True}}
    if api == "responses":
        del body["stream_options"]
        if "max_tokens" in body:
            body["max_output_tokens"] = body.pop("max_tokens")
        body["input"] = (req.messages if req.text is None and req.messages
                         else _prompt_text(req))
    elif api == "chat":
        body["messages"] = (req.messages if req.text is None and req.messages
                            else [{"role": "user", "content": _prompt_text(req)}])
    elif api == "completions":
        body["prompt"] = req.tokens.tolist() if ids_only else _prompt_text(req)
    else:
        raise ConfigError(f"unknown api {api!r}; choose from: {', '.join(APIS)}")
    return PATHS[api], body


def _has_content(chunk: dict[str, Any], api: str) -> bool:
    if api == "generate":
        return bool(chunk.get("text")) or bool(chunk.get("output_ids"))
    if api == "responses":
        return chunk.get("type") == "response.output_text.delta" and bool(chunk.get("delta"))
    for choice in chunk.get("choices") or ():
        if not isinstance(choice, dict):
            continue
        if api == "chat":
            delta = choice.get("delta") or choice.get("message") or {}
            if delta.get("content") or delta.get("reasoning_content"):
                return True
        elif choice.get("text"):
            return True
    return False


class _Reply:
    """Accumulates one response's chunks."""

    def __init__(self, res: RequestResult, api: str, clock: Callable[[], float]) -> None:
        self.res, self.api, self.clock = res, api, clock
        self.done = False
        self.first_data = NAN
        self.content_chunks = 0
        self.prompt: int | None = None
        self.cached: int | None = None
        self.completion: int | None = None
        self.error: str | None = None

    @property
    def over(self) -> bool:
        return self.done or self.error is not None

    def chunk(self, chunk: Any) -> None:
        now = self.clock()
        if not isinstance(chunk, dict):
            self.error = f"unexpected chunk {str(chunk)[:120]}"
            return
        message = error_message(chunk)
        kind = chunk.get("type") if self.api == "responses" else None
        if kind in ("error", "response.failed"):
            failed = chunk.get("response")
            message = str(chunk.get("message") or (failed or {}).get("error") or kind)
        if message is not None:
            self.error = message[:300]
            return
        if kind in ("response.completed", "response.incomplete"):
            self.done = True
        if _has_content(chunk, self.api):
            self.content_chunks += 1
            if math.isnan(self.res.first_token):
                self.res.first_token = now
        if math.isnan(self.first_data) and (chunk.get("choices") or "text" in chunk
                                            or kind is not None):
            self.first_data = now
        usage = usage_of(chunk)
        self.prompt = usage.prompt_tokens or self.prompt
        self.completion = usage.completion_tokens or self.completion
        if usage.cached_tokens is not None:
            self.cached = usage.cached_tokens

    def payload(self, payload: bytes) -> None:
        """One SSE ``data:`` payload."""
        if payload == DONE:
            self.done = True
            return
        try:
            self.chunk(json.loads(payload))
        except ValueError:  # not JSON, or not UTF-8
            self.error = f"malformed SSE data {payload[:120].decode('utf-8', 'replace')!r}"

    def close(self, req: Request) -> None:
        res = self.res
        res.finish = self.clock()
        if math.isnan(res.first_token):  # no chunk carried text: the first data chunk
            res.first_token = self.first_data if not math.isnan(self.first_data) else res.finish
        res.usage = self.prompt is not None
        res.prompt_tokens = self.prompt if self.prompt is not None else req.prompt_len
        res.cached_tokens = self.cached
        res.output_tokens = (self.completion if self.completion is not None
                             else self.content_chunks)
        if self.error is not None:
            res.fail("stream error", self.error, res.finish)
        elif not self.done:
            end = "response.completed" if self.api == "responses" else "data: [DONE]"
            res.fail("truncated stream", f"the stream ended before {end}", res.finish)
        else:
            res.ok = True


async def send_one(http: aiohttp.ClientSession, cfg: BenchConfig, model: str | None,
                   req: Request, clock: Callable[[], float], scheduled: float,
                   client: int) -> RequestResult:
    """Send ``req``, read its stream to the end; never raises (failures are in the result).
    ``sent`` is ``clock()`` when called, before the first await."""
    api = request_api(req, cfg.api)
    if cfg.adapters and req.adapter is None:
        req = dataclasses.replace(req, adapter=adapter_for(req.tokens, cfg.adapters, 1))
    path, body = http_request(req, api, model, cfg.max_tokens)
    res = RequestResult(req.rid, req.session, req.turn, api, client, scheduled, clock())
    headers = {"X-Request-Id": str(req.rid)}
    try:
        async with http.post(cfg.base_url + path, json=body, headers=headers,
                             timeout=aiohttp.ClientTimeout(total=cfg.timeout)) as resp:
            res.status = resp.status
            res.worker = resp.headers.get(WORKER_HEADER)
            if resp.status != 200:
                detail = (await resp.read()).decode("utf-8", "replace").strip()
                res.fail(f"HTTP {resp.status}", f"HTTP {resp.status}: {detail[:300]}",
                         clock())
                return res
            reply = _Reply(res, api, clock)
            if resp.content_type == "application/json":  # a server that ignored stream
                reply.chunk(json.loads(await resp.read()))
                reply.done = True
                res.first_token = clock()
            else:
                lines = SSELines()
                async for data in resp.content.iter_any():
                    for payload in lines.feed(data):
                        reply.payload(payload)
                    if reply.over:
                        break
                if not reply.over:
                    for payload in lines.close():
                        reply.payload(payload)
            reply.close(req)
    except TimeoutError:
        res.fail("timeout", f"no complete reply within {cfg.timeout:g} s", clock())
    except aiohttp.ClientError as e:
        res.fail(f"connection: {type(e).__name__}", f"{type(e).__name__}: {e}"[:300], clock())
    except Exception as e:  # anything else is still this request's failure, not a crash
        res.fail(f"client: {type(e).__name__}", f"{type(e).__name__}: {e}"[:300], clock())
    return res


async def check_endpoint(url: str, timeout: float = 10.0) -> str | None:
    """Raise :class:`ConfigError` unless ``GET /health`` or ``GET /v1/models`` answers 200;
    return the first model id of ``/v1/models`` when it lists one."""
    base = url.rstrip("/")
    seen: list[str] = []
    ready, model = False, None
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http:
        for path in ("/health", "/v1/models"):
            try:
                async with http.get(base + path) as resp:
                    seen.append(f"GET {path} answered {resp.status}")
                    if resp.status != 200:
                        continue
                    ready = True
                    if path == "/v1/models":
                        try:
                            data = json.loads(await resp.read())
                            model = str(data["data"][0]["id"])
                        except (ValueError, KeyError, IndexError, TypeError):
                            pass
            except (TimeoutError, aiohttp.ClientError) as e:
                seen.append(f"GET {path}: {type(e).__name__} {e}".rstrip())
    if not ready:
        raise ConfigError(f"cannot use {base}: {'; '.join(seen)}")
    return model
