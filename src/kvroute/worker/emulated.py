"""The emulated worker: SGLang's and vLLM's HTTP API in front of a :class:`SimWorker` that
runs in real time (on asyncio's clock through :class:`RealtimeLoop`).

Contract:

* Each request's prompt becomes token ids (the configured tokenizer; the chat endpoint
  applies :func:`apply_chat_template` first; token-id prompts are taken as they are), then a
  :class:`Request` with ``output_len`` = ``max_tokens`` (``/generate``:
  ``sampling_params.max_new_tokens``), submitted as a :class:`Job` to the one SimWorker.
  Its answer comes when the SimWorker says so (``on_first_token``, ``on_token``,
  ``on_finish``): latency, batching, queueing and prefix-cache hits are the simulator's,
  the generated text is deterministic filler (``max_tokens`` pieces, no EOS).
* Endpoints: ``POST /v1/completions``, ``POST /v1/chat/completions`` (SSE when
  ``stream``; ``stream_options.include_usage`` adds a usage chunk), ``POST /generate``
  (SGLang native), ``GET /v1/models``, ``GET /health``, ``GET /health_generate``,
  ``POST /flush_cache`` (400 while requests are queued or running), ``GET /metrics``
  (Prometheus text with SGLang's and vLLM's metric names, on a per-app registry).
* Bad input is a 400 with ``{"error": {"message", "type", "code"}}``. A client that goes
  away mid-stream does not affect the worker: its request runs to completion.
* ``speed`` divides every step time (all step-model coefficients), so tests and demos can
  run faster than real time; the KV pool size is unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge
from prometheus_client import generate_latest as _generate_latest

from kvroute.cache import policy_names
from kvroute.errors import ConfigError
from kvroute.sim.events import RealtimeLoop
from kvroute.sim.step_model import StepModel
from kvroute.sim.step_profiles import DEFAULT_PROFILE, load_profile
from kvroute.sim.worker import Job, SimWorker, WorkerConfig
from kvroute.workloads.request import Request
from kvroute.workloads.tokenizer import Tokenizer, apply_chat_template, load_tokenizer

__all__ = ["WORKER_KEY", "EmulatedConfig", "EmulatedWorker", "create_app", "filler_text",
           "scaled_model"]

log = logging.getLogger(__name__)

_SPEED_FIELDS = ("t_w_ms", "t0_ms", "b_ms", "c_ms", "g_ms", "overhead_ms")
_FILLER = ("lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit",
           "sed", "do", "eiusmod", "tempor", "incididunt", "ut", "labore", "et", "dolore",
           "magna", "aliqua")


def filler_piece(i: int) -> str:
    """The text of generated token ``i`` (0-based): deterministic filler."""
    return " " + _FILLER[i % len(_FILLER)]


def filler_text(start: int, end: int) -> str:
    """The text of generated tokens ``start`` .. ``end - 1``."""
    return "".join(filler_piece(i) for i in range(start, end))


def scaled_model(model: StepModel, speed: float) -> StepModel:
    """``model`` with every step time divided by ``speed`` (the KV pool unchanged)."""
    if speed == 1.0:
        return model
    return model.replace(**{f: getattr(model, f) / speed for f in _SPEED_FIELDS})


@dataclass(frozen=True)
class EmulatedConfig:
    """What the emulated worker serves (see the module docstring)."""

    profile: str | StepModel = DEFAULT_PROFILE  # a profile name / JSON path, or a model
    eviction: str = "lru"
    capacity: int | None = None  # KV pool in tokens; None: the profile's
    tokenizer: str | None = None  # tokenizer.json; None: the builtin approximation
    seed: int = 1
    speed: float = 1.0  # step times are divided by this
    model_name: str = "kvroute-emulated"  # reported by /v1/models and in responses
    chunk_size: int = 8192
    max_running: int | None = None
    default_max_tokens: int = 16

    def __post_init__(self) -> None:
        speed = self.speed
        if isinstance(speed, bool) or not isinstance(speed, (int, float)) or \
                not math.isfinite(speed) or speed <= 0:
            raise ConfigError(f"speed must be a finite number > 0, got {speed!r}")
        known = [p for p in policy_names() if p != "optimal"]
        if self.eviction not in known:
            raise ConfigError(f"unknown eviction policy {self.eviction!r} for a live worker; "
                              f"choose from: {', '.join(known)}")
        if not self.model_name:
            raise ConfigError("model_name must be a non-empty string")
        if self.default_max_tokens < 1:
            raise ConfigError(f"default_max_tokens must be >= 1, got {self.default_max_tokens}")
        self.worker_config()  # validates capacity, chunk_size, max_running

    def step_model(self) -> StepModel:
        """The profile's step model, sped up by ``speed``."""
        model = self.profile if isinstance(self.profile, StepModel) else \
            load_profile(self.profile)
        return scaled_model(model, float(self.speed))

    def worker_config(self) -> WorkerConfig:
        return WorkerConfig(capacity=self.capacity, eviction=self.eviction,
                            chunk_size=self.chunk_size, max_running=self.max_running)


class BadRequest(Exception):
    """A client error: answered with a 400 and an OpenAI-style error body."""


def _error(message: str, status: int = 400, kind: str = "invalid_request_error") -> web.Response:
    return web.json_response({"error": {"message": message, "type": kind, "code": status}},
                             status=status)


class _Metrics:
    """SGLang's and vLLM's engine metrics on a registry of this app's own."""

    def __init__(self, model_name: str, owner: EmulatedWorker) -> None:
        r = self.registry = CollectorRegistry()
        lab = ["model_name"]

        def counter(name: str, doc: str) -> Any:
            return Counter(name, doc, lab, registry=r).labels(model_name)

        def gauge(name: str, doc: str, fn: Callable[[], float]) -> None:
            Gauge(name, doc, lab, registry=r).labels(model_name).set_function(fn)

        self.sg_prompt = counter("sglang:prompt_tokens", "Prompt tokens processed")
        self.sg_gen = counter("sglang:generation_tokens", "Generated tokens")
        self.sg_cached = counter("sglang:cached_tokens", "Prompt tokens served from the cache")
        self.sg_requests = counter("sglang:num_requests", "Requests finished")
        gauge("sglang:num_running_reqs", "Running requests", lambda: owner.running)
        gauge("sglang:num_queue_reqs", "Queued requests", lambda: owner.waiting)
        gauge("sglang:token_usage", "Fraction of the KV pool in use", owner.kv_usage)
        gauge("sglang:max_total_num_tokens", "KV pool size in tokens", lambda: owner.capacity)
        self.vl_prompt = counter("vllm:prompt_tokens", "Prompt tokens processed")
        self.vl_gen = counter("vllm:generation_tokens", "Generated tokens")
        self.vl_hits = counter("vllm:prefix_cache_hits", "Prefix-cache hit tokens")
        self.vl_queries = counter("vllm:prefix_cache_queries", "Prefix-cache queried tokens")
        self.vl_success = counter("vllm:request_success", "Requests finished")
        gauge("vllm:num_requests_running", "Running requests", lambda: owner.running)
        gauge("vllm:num_requests_waiting", "Queued requests", lambda: owner.waiting)
        gauge("vllm:gpu_cache_usage_perc", "Fraction of the KV pool in use", owner.kv_usage)
        gauge("vllm:kv_cache_usage_perc", "Fraction of the KV pool in use", owner.kv_usage)
        Gauge("vllm:cache_config_info", "KV cache configuration", ["block_size", "num_gpu_blocks"],
              registry=r).labels("1", str(owner.capacity)).set(1)

    def render(self) -> bytes:
        return bytes(_generate_latest(self.registry))


class _Pending:
    """One request in flight: its job and what the HTTP side waits on."""

    __slots__ = ("counted", "done", "job", "progress", "t0")

    def __init__(self, job: Job, loop: asyncio.AbstractEventLoop) -> None:
        self.job = job
        self.t0 = loop.time()
        self.done: asyncio.Future[float] = loop.create_future()  # result: finish time
        self.progress = asyncio.Event()
        self.counted = 0  # generated tokens already added to the metrics


class EmulatedWorker:
    """The state behind one app: the SimWorker (built on startup), requests in flight,
    metrics."""

    def __init__(self, config: EmulatedConfig) -> None:
        self.config = config
        self.model = config.step_model()
        self.worker_config = config.worker_config()
        self.capacity = self.worker_config.capacity or self.model.kv_pool_tokens
        self.tokenizer: Tokenizer = load_tokenizer(config.tokenizer)
        self.metrics = _Metrics(config.model_name, self)
        self.worker: SimWorker | None = None
        self.pending: dict[int, _Pending] = {}
        self._rids = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None

    # ---------------------------------------------------------------- lifecycle
    async def start(self, app: web.Application) -> None:
        self._loop = asyncio.get_running_loop()
        self.worker = SimWorker(0, self.model, self.worker_config, RealtimeLoop(self._loop),
                                on_finish=self._on_finish, seed=self.config.seed,
                                on_first_token=self._on_first_token, on_token=self._on_token)

    # ---------------------------------------------------------------- state
    @property
    def running(self) -> int:
        return self.worker.running if self.worker is not None else 0

    @property
    def waiting(self) -> int:
        return len(self.worker.waiting) if self.worker is not None else 0

    def kv_usage(self) -> float:
        """Pool tokens in use (cache + reservations) over the pool, as the simulator's
        router sees it."""
        w = self.worker
        return w.used_tokens / w.capacity if w is not None else 0.0

    # ---------------------------------------------------------------- SimWorker callbacks
    def _on_first_token(self, job: Job) -> None:
        m = self.metrics
        n, hit = job.req.prompt_len, job.cached
        m.sg_prompt.inc(n)
        m.vl_prompt.inc(n)
        m.sg_cached.inc(hit)
        m.vl_hits.inc(hit)
        m.vl_queries.inc(n)

    def _on_token(self, job: Job) -> None:
        p = self.pending.get(job.req.rid)
        if p is None:
            return
        new = job.generated - p.counted
        if new > 0:
            p.counted = job.generated
            self.metrics.sg_gen.inc(new)
            self.metrics.vl_gen.inc(new)
        p.progress.set()

    def _on_finish(self, job: Job) -> None:
        self.metrics.sg_requests.inc()
        self.metrics.vl_success.inc()
        p = self.pending.pop(job.req.rid, None)
        if p is None:
            return
        p.progress.set()
        if not p.done.done():
            assert self._loop is not None
            p.done.set_result(self._loop.time())

    # ---------------------------------------------------------------- requests
    def encode(self, text: str) -> np.ndarray:
        return self.tokenizer.encode(text)

    def submit(self, ids: np.ndarray, max_tokens: int) -> _Pending:
        """Queue a request on the SimWorker (BadRequest when it can never fit)."""
        if self.worker is None or self._loop is None:
            raise web.HTTPServiceUnavailable(text="the worker is starting")
        if len(ids) == 0:
            raise BadRequest("the prompt is empty (no tokens)")
        if len(ids) + max_tokens > self.capacity:
            raise BadRequest(f"the prompt ({len(ids)} tokens) plus max_tokens ({max_tokens}) "
                             f"exceeds the KV pool of {self.capacity} tokens")
        rid = next(self._rids)
        try:
            req = Request(rid=rid, tokens=np.asarray(ids, dtype=np.int64), output_len=max_tokens)
        except ConfigError as e:
            raise BadRequest(str(e)) from e
        job = Job(req, 0, self.worker.loop.now)
        pending = _Pending(job, self._loop)
        self.pending[rid] = pending
        try:
            self.worker.submit(job)
        except ConfigError as e:
            del self.pending[rid]
            raise BadRequest(str(e)) from e
        return pending

    def flush(self) -> str | None:
        """Clear the radix cache; the reason it cannot (requests in flight), else None."""
        w = self.worker
        if w is None:
            return "the worker is starting"
        if w.running or w.waiting or w.cache.locked:
            return (f"Cache not flushed because there are pending requests. "
                    f"#queue-req: {len(w.waiting)}, #running-req: {w.running}")
        w.cache.clear()
        return None


WORKER_KEY = web.AppKey("kvroute_emulated_worker", EmulatedWorker)


# -------------------------------------------------------------------- request parsing
async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json(loads=json.loads)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BadRequest(f"the request body is not valid JSON ({e})") from e
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    return body


def _as_ids(value: Any) -> np.ndarray | None:
    """Token ids from a list of ints (None when ``value`` is not one)."""
    if isinstance(value, list) and value and all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value):
        return np.asarray(value, dtype=np.int64)
    return None


def _prompt_ids(ew: EmulatedWorker, value: Any, field: str) -> np.ndarray:
    """A prompt given as a string, a list of one string, token ids or a list of one list of
    token ids."""
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], (str, list)):
        value = value[0]
    if isinstance(value, str):
        if not value:
            raise BadRequest(f"'{field}' is empty")
        return ew.encode(value)
    ids = _as_ids(value)
    if ids is None:
        if isinstance(value, list) and len(value) > 1 and all(isinstance(v, str) for v in value):
            raise BadRequest(f"batched prompts are not supported: give '{field}' one string")
        raise BadRequest(f"'{field}' must be a string or a list of token ids (ints >= 0)")
    return ids


def _positive_int(value: Any, field: str, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"'{field}' must be an integer, got {value!r}")
    if value < 1:
        raise BadRequest(f"'{field}' must be >= 1, got {value}")
    return value


def _check_n(body: dict[str, Any]) -> None:
    n = body.get("n", 1)
    if n is not None and n != 1:
        raise BadRequest(f"only n = 1 is supported, got n = {n!r}")


def _stream_flags(body: dict[str, Any]) -> tuple[bool, bool]:
    stream = bool(body.get("stream", False))
    opts = body.get("stream_options")
    usage = isinstance(opts, dict) and bool(opts.get("include_usage", False))
    return stream, usage


# -------------------------------------------------------------------- responses
def _usage(job: Job) -> dict[str, Any]:
    n, out = job.req.prompt_len, job.req.output_len
    return {"prompt_tokens": n, "completion_tokens": out, "total_tokens": n + out,
            "prompt_tokens_details": {"cached_tokens": job.cached}}


async def _open_sse(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                       "Cache-Control": "no-cache"})
    await resp.prepare(request)
    return resp


async def _send(resp: web.StreamResponse, payload: Any) -> bool:
    """Write one SSE event; False when the client has gone away."""
    data = payload if isinstance(payload, str) else json.dumps(payload)
    try:
        await resp.write(f"data: {data}\n\n".encode())
    except (ConnectionError, RuntimeError):  # ConnectionResetError: the client left
        return False
    return True


async def _close_sse(resp: web.StreamResponse) -> None:
    """Send ``data: [DONE]`` and end the stream (quietly if the client has gone)."""
    if await _send(resp, "[DONE]"):
        with contextlib.suppress(ConnectionError, RuntimeError):
            await resp.write_eof()


async def _tokens(p: _Pending) -> AsyncIterator[tuple[int, int]]:
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


async def _openai(request: web.Request, chat: bool) -> web.StreamResponse:
    ew = request.app[WORKER_KEY]
    body = await _json_body(request)
    if chat:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest("'messages' must be a non-empty list")
        try:
            ids = ew.encode(apply_chat_template(messages))
        except ConfigError as e:
            raise BadRequest(str(e)) from e
        mt = body.get("max_completion_tokens")
        max_tokens = _positive_int(body.get("max_tokens", mt), "max_tokens",
                                   ew.config.default_max_tokens)
    else:
        if "prompt" not in body:
            raise BadRequest("'prompt' is required")
        ids = _prompt_ids(ew, body["prompt"], "prompt")
        max_tokens = _positive_int(body.get("max_tokens"), "max_tokens",
                                   ew.config.default_max_tokens)
    _check_n(body)
    stream, include_usage = _stream_flags(body)
    p = ew.submit(ids, max_tokens)
    rid = f"{'chatcmpl' if chat else 'cmpl'}-{p.job.req.rid}"
    created = int(time.time())
    model = ew.config.model_name
    obj = "chat.completion" if chat else "text_completion"
    if not stream:
        await asyncio.shield(p.done)
        text = filler_text(0, max_tokens)
        choice: dict[str, Any] = {"index": 0, "finish_reason": "length", "logprobs": None}
        if chat:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        return web.json_response({"id": rid, "object": obj, "created": created, "model": model,
                                  "choices": [choice], "usage": _usage(p.job)})
    chunk_obj = "chat.completion.chunk" if chat else "text_completion"
    resp = await _open_sse(request)

    def chunk(choice: dict[str, Any]) -> dict[str, Any]:
        return {"id": rid, "object": chunk_obj, "created": created, "model": model,
                "choices": [choice]}

    alive = True
    async for start, end in _tokens(p):
        if chat and start == 0 and alive:  # the role chunk goes out with the first token
            alive = await _send(resp, chunk({"index": 0, "delta": {"role": "assistant",
                                                                   "content": ""},
                                             "logprobs": None, "finish_reason": None}))
        for i in range(start, end):
            if not alive:
                break
            fin = "length" if i == max_tokens - 1 else None
            piece = filler_piece(i)
            c: dict[str, Any] = {"index": 0, "logprobs": None, "finish_reason": fin}
            if chat:
                c["delta"] = {"content": piece}
            else:
                c["text"] = piece
            alive = await _send(resp, chunk(c))
    await asyncio.shield(p.done)
    if alive and include_usage:
        alive = await _send(resp, {"id": rid, "object": chunk_obj, "created": created,
                                   "model": model, "choices": [], "usage": _usage(p.job)})
    if alive:
        await _close_sse(resp)
    return resp


async def completions(request: web.Request) -> web.StreamResponse:
    """``POST /v1/completions`` (OpenAI)."""
    return await _openai(request, chat=False)


async def chat_completions(request: web.Request) -> web.StreamResponse:
    """``POST /v1/chat/completions`` (OpenAI)."""
    return await _openai(request, chat=True)


async def generate(request: web.Request) -> web.StreamResponse:
    """``POST /generate`` (SGLang native: ``text`` or ``input_ids``, ``sampling_params``)."""
    ew = request.app[WORKER_KEY]
    body = await _json_body(request)
    if body.get("text") is not None:
        ids = _prompt_ids(ew, body["text"], "text")
    elif body.get("input_ids") is not None:
        ids = _prompt_ids(ew, body["input_ids"], "input_ids")
    else:
        raise BadRequest("/generate needs 'text' or 'input_ids'")
    params = body.get("sampling_params") or {}
    if not isinstance(params, dict):
        raise BadRequest("'sampling_params' must be an object")
    max_tokens = _positive_int(params.get("max_new_tokens"), "sampling_params.max_new_tokens",
                               ew.config.default_max_tokens)
    stream = bool(body.get("stream", False))
    p = ew.submit(ids, max_tokens)
    job = p.job
    assert ew._loop is not None
    loop = ew._loop

    def meta(done: bool, generated: int) -> dict[str, Any]:
        return {"id": str(job.req.rid), "prompt_tokens": job.req.prompt_len,
                "completion_tokens": generated, "cached_tokens": job.cached,
                "finish_reason": {"type": "length", "length": max_tokens} if done else None,
                "e2e_latency": loop.time() - p.t0}

    if not stream:
        await asyncio.shield(p.done)
        return web.json_response({"text": filler_text(0, max_tokens),
                                  "meta_info": meta(True, max_tokens)})
    resp = await _open_sse(request)
    alive = True
    async for _, end in _tokens(p):
        if alive:
            alive = await _send(resp, {"text": filler_text(0, end), "index": 0,
                                       "meta_info": meta(end == max_tokens, end)})
    await asyncio.shield(p.done)
    if alive:
        await _close_sse(resp)
    return resp


async def models(request: web.Request) -> web.Response:
    """``GET /v1/models``."""
    ew = request.app[WORKER_KEY]
    name = ew.config.model_name
    return web.json_response({"object": "list", "data": [{
        "id": name, "object": "model", "created": 0, "owned_by": "kvroute",
        "root": name, "max_model_len": ew.capacity}]})


async def health(request: web.Request) -> web.Response:
    """``GET /health`` and ``/health_generate``: 200 once the worker runs."""
    if request.app[WORKER_KEY].worker is None:
        return _error("the worker is starting", 503, "service_unavailable")
    return web.Response(text="")


async def flush_cache(request: web.Request) -> web.Response:
    """``POST /flush_cache`` (SGLang): clear the radix cache when nothing is in flight."""
    reason = request.app[WORKER_KEY].flush()
    if reason is not None:
        return _error(reason)
    return web.Response(text="Cache flushed.\nPlease check backend logs for more details. "
                             "(When there are running or waiting requests, the operation "
                             "will not be performed.)\n")


async def metrics(request: web.Request) -> web.Response:
    """``GET /metrics``: Prometheus text format."""
    body = request.app[WORKER_KEY].metrics.render()
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
    """The aiohttp app of an emulated worker (its SimWorker starts with the app)."""
    ew = EmulatedWorker(config or EmulatedConfig())
    app = web.Application(middlewares=[_errors])
    app[WORKER_KEY] = ew
    app.on_startup.append(ew.start)
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/generate", generate)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/health", health)
    app.router.add_get("/health_generate", health)
    app.router.add_post("/flush_cache", flush_cache)
    app.router.add_get("/metrics", metrics)
    return app
