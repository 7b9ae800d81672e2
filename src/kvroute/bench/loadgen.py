"""The asyncio/aiohttp client of ``kvroute bench``: workload requests over HTTP, timed.

Contract:

* Every request of the workload that is sent gives exactly one :class:`RequestResult`,
  ok or not (HTTP status, connection error, timeout, malformed or truncated stream):
  nothing is lost. ``--duration`` stops *sending*; requests in flight finish.
* Times are seconds from the start of the run on the event loop's monotonic clock:
  ``scheduled`` (when the workload wanted it sent; the open loop's arrival, rebased so the
  first request goes at 0), ``sent``, ``first_token`` (first SSE data chunk carrying
  content), ``finish`` (``data: [DONE]`` or the end of the body).
* Prompt, cached and output tokens come from the usage chunk (``stream_options.
  include_usage``; SGLang ``/generate``: ``meta_info``) when the server sends one, else
  the workload's prompt length, no cached count and the number of content chunks.
* Drivers: open loop (each request at its arrival), open loop with ``concurrency``
  (N workers pull the next request when they finish), closed loop (N clients each take the
  next unstarted session and send its turns in order, waiting for each reply plus the
  workload's think time).
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from itertools import islice
from typing import Any

import aiohttp

from kvroute.errors import ConfigError
from kvroute.workloads.request import ClosedLoop, Request, Workload
from kvroute.workloads.tokenizer import apply_chat_template, pseudo_text

__all__ = ["APIS", "WORKER_HEADER", "BenchConfig", "BenchRun", "RequestResult",
           "check_endpoint", "http_request", "metrics_endpoint", "run_bench", "run_workload",
           "scrape_metrics"]

APIS = ("completions", "chat", "generate")
PATHS = {"completions": "/v1/completions", "chat": "/v1/chat/completions",
         "generate": "/generate"}
WORKER_HEADER = "X-Kvroute-Worker"
NAN = float("nan")


@dataclass(frozen=True)
class BenchConfig:
    url: str
    api: str | None = None  # None: per request (completions, or chat for chat-shaped ones)
    model: str | None = None  # None: the first of GET /v1/models, else "default"
    concurrency: int | None = None  # closed loop clients / open-loop pulling workers
    requests: int | None = None  # only the first N requests
    duration: float | None = None  # stop sending after this many seconds
    timeout: float = 300.0  # per request, seconds
    metrics_urls: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ConfigError(f"--url must start with http:// or https://, got {self.url!r}")
        if self.api is not None and self.api not in APIS:
            raise ConfigError(f"unknown api {self.api!r}; choose from: {', '.join(APIS)}")
        for name in ("concurrency", "requests"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be >= 1, got {value}")
        if self.duration is not None and not self.duration > 0:
            raise ConfigError(f"duration must be > 0 s, got {self.duration}")
        if not self.timeout > 0:
            raise ConfigError(f"timeout must be > 0 s, got {self.timeout}")
        for u in self.metrics_urls:
            if not u.startswith(("http://", "https://")):
                raise ConfigError(f"--metrics-url must start with http:// or https://, got {u!r}")

    @property
    def base_url(self) -> str:
        return self.url.rstrip("/")


@dataclass
class RequestResult:
    """One sent request, as the client saw it (times in s from the start of the run)."""

    rid: int
    session: int
    turn: int
    api: str
    client: int  # driver coroutine that sent it (-1: the open-loop dispatcher)
    scheduled: float
    sent: float
    first_token: float = NAN
    finish: float = NAN
    ok: bool = False
    status: int | None = None  # HTTP status, None when no response came
    reason: str | None = None  # short failure category ("HTTP 500", "timeout", ...)
    error: str | None = None  # failure detail
    prompt_tokens: int = 0
    cached_tokens: int | None = None  # None: the server did not report it
    output_tokens: int = 0
    usage: bool = False  # prompt/output tokens come from the server's usage report
    worker: str | None = None  # the X-Kvroute-Worker header, when present

    @property
    def ttft(self) -> float:
        return self.first_token - self.sent

    @property
    def e2e(self) -> float:
        return self.finish - self.sent

    def fail(self, reason: str, detail: str, now: float) -> None:
        self.ok, self.reason, self.error = False, reason, detail
        if math.isnan(self.finish):
            self.finish = now

    def to_json(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v)
                for k, v in asdict(self).items()}


@dataclass
class BenchRun:
    """What :func:`run_bench` observed."""

    results: list[RequestResult]  # in completion order
    planned: int | None  # requests the run meant to send (None: unknown, a lazy trace)
    wall_s: float
    mode: str  # "open", "open-concurrency" or "closed"
    concurrency: int | None
    model: str | None = None
    metrics_before: dict[str, dict[str, float] | str] = field(default_factory=dict)
    metrics_after: dict[str, dict[str, float] | str] = field(default_factory=dict)

    @property
    def unsent(self) -> int | None:
        return None if self.planned is None else self.planned - len(self.results)


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


def http_request(req: Request, api: str, model: str | None) -> tuple[str, dict[str, Any]]:
    """(path, JSON body) of ``req`` for ``api``: greedy, ``ignore_eos``, streamed, usage on.
    Requests that have only token ids (gsp, mooncake) are sent as ids (OpenAI ``prompt``
    as a list of ints, SGLang ``input_ids``), so the engine sees exactly those tokens."""
    ids_only = req.text is None and not req.messages  # e.g. gsp, mooncake: send the ids
    if api == "generate":
        prompt: dict[str, Any] = ({"input_ids": req.tokens.tolist()} if ids_only
                                  else {"text": _prompt_text(req)})
        return PATHS[api], {
            **prompt, "stream": True,
            "sampling_params": {"max_new_tokens": req.output_len, "temperature": 0,
                                "ignore_eos": True}}
    body: dict[str, Any] = {
        "model": model or "default", "max_tokens": req.output_len, "temperature": 0,
        "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}
    if api == "chat":
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


def _int(x: Any) -> int | None:
    return int(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


class _Stream:
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

    def chunk(self, chunk: Any) -> None:
        now = self.clock()
        if not isinstance(chunk, dict):
            self.error = f"unexpected chunk {str(chunk)[:120]}"
            return
        if chunk.get("error") and not chunk.get("choices"):
            err = chunk["error"]
            self.error = str(err.get("message", err) if isinstance(err, dict) else err)[:300]
            return
        if _has_content(chunk, self.api):
            self.content_chunks += 1
            if math.isnan(self.res.first_token):
                self.res.first_token = now
        if math.isnan(self.first_data) and (chunk.get("choices") or "text" in chunk):
            self.first_data = now
        usage = chunk.get("usage") if self.api != "generate" else chunk.get("meta_info")
        if isinstance(usage, dict):
            self.prompt = _int(usage.get("prompt_tokens")) or self.prompt
            self.completion = _int(usage.get("completion_tokens")) or self.completion
            details = usage.get("prompt_tokens_details")
            cached = (details.get("cached_tokens") if isinstance(details, dict)
                      else usage.get("cached_tokens"))
            if _int(cached) is not None:
                self.cached = _int(cached)

    def line(self, raw: bytes) -> None:
        text = raw.decode("utf-8", "replace").strip()
        if not text.startswith("data:"):
            return  # blank separators, comments, event:/id: fields
        payload = text[5:].strip()
        if payload == "[DONE]":
            self.done = True
            return
        try:
            self.chunk(json.loads(payload))
        except json.JSONDecodeError:
            self.error = f"malformed SSE data {payload[:120]!r}"

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
            res.fail("truncated stream", "the stream ended before data: [DONE]", res.finish)
        else:
            res.ok = True


async def send_one(http: aiohttp.ClientSession, cfg: BenchConfig, model: str | None,
                   req: Request, clock: Callable[[], float], scheduled: float,
                   client: int) -> RequestResult:
    """Send ``req``, read its stream to the end; never raises (failures are in the result)."""
    api = request_api(req, cfg.api)
    path, body = http_request(req, api, model)
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
            stream = _Stream(res, api, clock)
            if resp.content_type == "application/json":  # a server that ignored stream
                stream.chunk(json.loads(await resp.read()))
                stream.done = True
                res.first_token = clock()
            else:
                buf = b""
                async for data in resp.content.iter_any():
                    buf += data
                    *lines, buf = buf.split(b"\n")
                    for line in lines:
                        stream.line(line)
                    if stream.done or stream.error:
                        break
                if buf and not (stream.done or stream.error):
                    stream.line(buf)
            stream.close(req)
    except TimeoutError:
        res.fail("timeout", f"no complete reply within {cfg.timeout:g} s", clock())
    except aiohttp.ClientError as e:
        res.fail(f"connection: {type(e).__name__}", f"{type(e).__name__}: {e}"[:300], clock())
    except Exception as e:  # anything else is still this request's failure, not a crash
        res.fail(f"client: {type(e).__name__}", f"{type(e).__name__}: {e}"[:300], clock())
    return res


def _cut_sessions(sessions: list[list[Request]], n: int | None) -> list[list[Request]]:
    if n is None:
        return sessions
    out: list[list[Request]] = []
    left = n
    for s in sessions:
        if left <= 0:
            break
        out.append(s[:left])
        left -= len(out[-1])
    return out


def _planned(workload: Workload, n: int | None) -> int | None:
    size = workload.size
    if size is None:
        return n
    return size if n is None else min(size, n)


async def run_workload(workload: Workload, cfg: BenchConfig, model: str | None = None,
                       on_result: Callable[[RequestResult], None] | None = None) -> BenchRun:
    """Send ``workload`` to ``cfg.url`` with the driver its shape and ``cfg`` call for."""
    loop = asyncio.get_running_loop()
    results: list[RequestResult] = []
    connector = aiohttp.TCPConnector(limit=0)  # the driver, not the pool, bounds concurrency
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=None)) as http:
        t0 = loop.time()

        def clock() -> float:
            return loop.time() - t0

        def stopped() -> bool:
            return cfg.duration is not None and clock() >= cfg.duration

        async def send(req: Request, scheduled: float, client: int) -> None:
            res = await send_one(http, cfg, model, req, clock, scheduled, client)
            results.append(res)
            if on_result is not None:
                on_result(res)

        if isinstance(workload, ClosedLoop):
            mode, n = "closed", cfg.concurrency or workload.concurrency
            sessions = iter(_cut_sessions(workload.sessions, cfg.requests))

            async def client(cid: int) -> None:
                for session in sessions:  # shared: each client takes the next session
                    for k, req in enumerate(session):
                        if k and workload.think_time:
                            await asyncio.sleep(workload.think_time)
                        if stopped():
                            return
                        await send(req, clock(), cid)

            await asyncio.gather(*(client(c) for c in range(n)))
        elif cfg.concurrency:
            mode, n = "open-concurrency", cfg.concurrency
            pending: Iterator[Request] = islice(iter(workload), cfg.requests)

            async def worker(cid: int) -> None:
                for req in pending:  # shared iterator: the next request, when free
                    if stopped():
                        return
                    await send(req, clock(), cid)

            await asyncio.gather(*(worker(c) for c in range(n)))
        else:
            mode, n = "open", None
            await _open_loop(islice(iter(workload), cfg.requests), cfg, clock, send)
    return BenchRun(results, _planned(workload, cfg.requests), clock(), mode, n, model)


async def _open_loop(requests: Iterable[Request], cfg: BenchConfig, clock: Callable[[], float],
                     send: Callable[[Request, float, int], Any]) -> None:
    tasks: set[asyncio.Task[None]] = set()
    first: float | None = None
    for req in requests:
        if first is None:
            first = req.arrival
        at = req.arrival - first
        if cfg.duration is not None and at >= cfg.duration:
            break
        delay = at - clock()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(send(req, at, -1))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    while tasks:
        await asyncio.gather(*tasks)


def metrics_endpoint(url: str) -> str:
    """``url`` itself when it names a path, else ``url/metrics``."""
    from urllib.parse import urlsplit

    return url if urlsplit(url).path not in ("", "/") else url.rstrip("/") + "/metrics"


async def scrape_metrics(urls: Iterable[str], timeout: float = 10.0
                         ) -> dict[str, dict[str, float] | str]:
    """The prefix-cache counters of each ``/metrics`` URL, or why it could not be read."""
    from kvroute.bench.report import cache_counters

    async def one(http: aiohttp.ClientSession, url: str) -> dict[str, float] | str:
        try:
            async with http.get(metrics_endpoint(url)) as resp:
                if resp.status != 200:
                    return f"HTTP {resp.status}"
                return cache_counters(await resp.text())
        except (TimeoutError, aiohttp.ClientError) as e:
            return f"{type(e).__name__}: {e}"
        except ValueError as e:  # the Prometheus parser
            return f"unparsable metrics: {e}"

    urls = list(urls)
    if not urls:
        return {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http:
        got = await asyncio.gather(*(one(http, u) for u in urls))
    return dict(zip(urls, got, strict=True))


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


async def run_bench(workload: Workload, cfg: BenchConfig,
                    on_result: Callable[[RequestResult], None] | None = None) -> BenchRun:
    """Check the endpoint, scrape ``/metrics``, run the workload, scrape again."""
    found = await check_endpoint(cfg.url, min(cfg.timeout, 10.0))
    model = cfg.model or found
    before = await scrape_metrics(cfg.metrics_urls)
    run = await run_workload(workload, cfg, model, on_result)
    run.metrics_before = before
    run.metrics_after = await scrape_metrics(cfg.metrics_urls)
    return run
