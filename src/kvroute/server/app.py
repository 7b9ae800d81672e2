"""The live router: a reverse proxy in front of OpenAI-compatible / SGLang engines, on the
lean HTTP server of :mod:`kvroute.server.http` (requests to the workers go through the
lean client of :mod:`kvroute.server.upstream`).

Contract:

* ``build_app(ServeConfig, policy)`` returns the :class:`RouterApp`; ``await
  app.start(host, port)`` opens the upstream pool, starts the health and engine checks and
  listens; ``await app.stop()`` stops gracefully: no new connections, new requests on open
  ones get 503 (draining), the requests in flight get up to ``drain_timeout`` seconds, then
  every connection, the checks and the pool close. Routes:
  ``POST /v1/completions``, ``/v1/chat/completions``, ``/generate`` (proxied to the worker
  the policy picks), ``GET /v1/models`` (from the first available worker), ``/health``,
  ``/readiness`` (503 when no worker is available or the router is draining),
  ``/liveness``, ``/metrics`` (Prometheus text), admin ``GET/POST/DELETE /workers`` and
  SGLang's ``POST /add_worker?url=`` / ``/remove_worker?url=`` (``Authorization: Bearer``
  when an API key is set). Anything else is a JSON 404, or 405 on a known path.
* Requests are read by :mod:`kvroute.protocol.request_body` (a body that breaks it is a
  400 before any worker is tried): the routing units are the first prompt's, token ids
  with a tokenizer (chat: ``messages`` through the model's chat template when
  ``chat_template`` is set, else a Llama-3-like one), else characters, as SGLang's
  router does. The clock is ``time.monotonic()`` since the app started.
* Accounting: every routed attempt is closed exactly once (``try``/``finally``) with
  ``Router.complete``: ok on success (TTFT at the first streamed chunk, ``cached_tokens``
  as :mod:`kvroute.protocol.response_body` reads it from the body or the SSE chunks),
  not ok on upstream errors, timeouts, client disconnects and cancellation.
* Retries: connection errors and 5xx/408/429 before anything was sent to the client are
  retried on another worker (the failed ones excluded for this request), up to
  ``max_retries`` times with jittered exponential backoff from a seeded RNG. Timeouts are
  not retried (504). A stream that fails midway ends with an SSE error event.
* Engine load: every ``metrics_interval`` seconds each worker's ``/metrics`` is read into
  the engine-reported fields of its ``WorkerState`` (:mod:`kvroute.server.engine_metrics`).
* Responses carry ``X-Kvroute-Worker`` and, when the policy predicts, ``X-Kvroute-Predicted-Ms``.
  Errors of the router itself are JSON ``{"error": {"message", "type"}}``, never tracebacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np

from kvroute.errors import ConfigError
from kvroute.protocol.request_body import (
    SESSION_HEADER,
    BadRequest,
    PromptEncoder,
    json_body,
    max_tokens_of,
    session_key,
    streamed,
)
from kvroute.protocol.response_body import SSEScanner, cached_tokens_of
from kvroute.routing.base import RouteRequest, RoutingPolicy
from kvroute.routing.router import Dispatch
from kvroute.server.engine_metrics import EngineLoad, engine_load
from kvroute.server.http import (
    HttpServer,
    Request,
    Response,
    StreamResponse,
    error_response,
    json_response,
)
from kvroute.server.membership import Membership, Worker, wait_idle
from kvroute.server.metrics import CONTENT_TYPE_LATEST, RouterMetrics
from kvroute.server.upstream import Upstream, UpstreamError, UpstreamResponse, UpstreamTimeout
from kvroute.workloads.chat_template import ChatTemplate
from kvroute.workloads.tokenizer import Tokenizer

__all__ = ["RouterApp", "ServeConfig", "build_app"]

log = logging.getLogger("kvroute.server")

RETRYABLE = frozenset({408, 429, 500, 502, 503, 504})
_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
                  "trailer", "transfer-encoding", "upgrade", "host", "content-length",
                  "accept-encoding", "content-encoding"})


@dataclass
class ServeConfig:
    worker_urls: list[str]
    policy: str = "lbgr"
    tokenizer: Tokenizer | None = None
    chat_template: ChatTemplate | None = None  # the model's own; None: the Llama-3-like one
    api_key: str | None = None
    decision_log: str | None = None
    health_interval: float = 5.0  # 0 disables health checks
    metrics_interval: float = 1.0  # seconds between engine /metrics scrapes; 0 disables
    health_timeout: float = 2.0
    request_timeout: float = 600.0
    connect_timeout: float = 10.0
    max_retries: int = 2
    backoff_base: float = 0.05
    backoff_factor: float = 1.5
    backoff_jitter: float = 0.2
    failure_threshold: int = 3
    cooldown_s: float = 30.0
    drain_timeout: float = 30.0
    seed: int = 0
    policy_kwargs: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        if min(self.health_interval, self.metrics_interval, self.max_retries,
               self.backoff_base, self.drain_timeout) < 0 \
                or min(self.request_timeout, self.health_timeout, self.connect_timeout) <= 0:
            raise ConfigError("need --health-interval >= 0, --metrics-interval >= 0, "
                              "--request-timeout > 0, "
                              "--max-retries >= 0 and non-negative backoff/drain times")


_error = error_response


@dataclass
class _Failed:
    """An attempt that failed before anything reached the client."""

    response: Response
    retry: bool


@dataclass
class _Outcome:
    ok: bool = False
    error: str | None = "cancelled"
    ttft: float | None = None
    cached: int | None = None


Route = Callable[[Request], Awaitable[Response | StreamResponse]]


class RouterApp:
    def __init__(self, config: ServeConfig, policy: RoutingPolicy) -> None:
        config.validate()
        self.config = config
        self.members = Membership(config.worker_urls, policy,
                                  failure_threshold=config.failure_threshold,
                                  cooldown_s=config.cooldown_s,
                                  health_checks=config.health_interval > 0)
        self.policy_name = policy.name
        self.prompts = PromptEncoder(config.tokenizer, config.chat_template)
        self.metrics = RouterMetrics()
        self.rng = random.Random(config.seed)
        self.t0 = time.monotonic()
        self.draining = False
        self.upstream: Upstream | None = None
        self._log: IO[str] | None = None
        if config.decision_log:
            try:
                self._log = open(config.decision_log, "a", encoding="utf-8")  # noqa: SIM115
            except OSError as e:
                raise ConfigError(f"{config.decision_log}: cannot open the decision log "
                                  f"({e.strerror})") from e
        self._tasks: list[asyncio.Task[None]] = []
        self._unreadable: set[str] = set()  # workers whose /metrics we warned about
        self.server: HttpServer | None = None
        self._update_gauges()

        def proxied(route: str, path: str) -> Route:
            async def handler(request: Request) -> Response | StreamResponse:
                return await self.proxy(request, route, path)
            return handler

        self.routes: dict[tuple[str, str], Route] = {
            ("POST", "/v1/completions"): proxied("completions", "/v1/completions"),
            ("POST", "/v1/chat/completions"): proxied("chat", "/v1/chat/completions"),
            ("POST", "/generate"): proxied("generate", "/generate"),
            ("GET", "/v1/models"): self.models,
            ("GET", "/health"): self.health,
            ("GET", "/liveness"): self.liveness,
            ("GET", "/readiness"): self.readiness,
            ("GET", "/metrics"): self.metrics_route,
            ("GET", "/workers"): self.workers_admin,
            ("POST", "/workers"): self.workers_admin,
            ("DELETE", "/workers"): self.workers_admin,
            ("POST", "/add_worker"): self.workers_admin,
            ("POST", "/remove_worker"): self.workers_admin,
        }
        self._known = {path for _, path in self.routes}

    # --- serving ------------------------------------------------------------------------
    async def handle(self, request: Request) -> Response | StreamResponse:
        """Every request: its route, or a JSON 404/405; unexpected errors become JSON 500s."""
        route = self.routes.get((request.method, request.path))
        if route is None:
            if request.path in self._known:
                return _error(405, f"{request.method} is not allowed on {request.path}",
                              "http_error")
            return _error(404, f"no route {request.method} {request.path}", "not_found")
        try:
            return await route(request)
        except (asyncio.CancelledError, ConnectionError):
            raise
        except Exception:
            log.exception("unhandled error on %s %s", request.method, request.path)
            return _error(500, "internal router error (see the router's log)", "internal_error")

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Open the upstream pool, start the periodic checks and listen on ``host:port``
        (port 0: a free one, then :attr:`port`); ``OSError`` when it cannot listen."""
        self.server = HttpServer(self.handle, max_body=256 * 1024 ** 2)
        try:
            await self.server.start(host, port)
        except BaseException:
            self.server = None
            await self.cleanup()
            raise
        await self.startup()  # before the loop runs again: no request comes in first

    @property
    def port(self) -> int:
        assert self.server is not None, "not listening"
        return self.server.port

    async def stop(self) -> None:
        """Stop gracefully: no new connections, draining (503) while the requests in flight
        finish (up to ``drain_timeout``), then close the connections and clean up."""
        server, self.server = self.server, None
        if server is not None:
            server.close()
            await self._on_shutdown()
            await server.shutdown(5.0)
        await self.cleanup()

    # --- plumbing ---------------------------------------------------------------------
    def now(self) -> float:
        return time.monotonic() - self.t0

    def _update_gauges(self) -> None:
        """Per-worker health and in-flight gauges (set when read, not per request)."""
        m, mt = self.members, self.metrics
        for w, a, s in zip(m.workers, m.available(self.now()), m.router.workers, strict=True):
            mt.child(mt.healthy, w.url).set(1 if a else 0)
            mt.child(mt.in_flight, w.url).set(s.in_flight)

    def _write_log(self, record: dict[str, Any]) -> None:
        if self._log is not None:
            self._log.write(json.dumps(record, separators=(",", ":")) + "\n")
            self._log.flush()

    async def startup(self) -> None:
        """Open the upstream pool and start the periodic health and engine checks."""
        self.upstream = Upstream(connect_timeout=self.config.connect_timeout,
                                 total_timeout=self.config.request_timeout)
        for interval, check in ((self.config.health_interval, self.check_health),
                                (self.config.metrics_interval, self.scrape_engines)):
            if interval > 0:
                self._tasks.append(asyncio.create_task(self._every(interval, check)))

    async def cleanup(self) -> None:
        """Stop the checks, close the upstream pool and the decision log."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.upstream is not None:
            await self.upstream.close()
        if self._log is not None:
            self._log.close()
            self._log = None

    async def _on_shutdown(self) -> None:
        self.draining = True
        if not await wait_idle(self.members, self.config.drain_timeout):
            log.warning("shutdown: %d requests still in flight after %.0f s",
                        len(self.members.open), self.config.drain_timeout)

    @staticmethod
    async def _every(interval: float, check: Callable[[], Awaitable[None]]) -> None:
        while True:
            await check()
            await asyncio.sleep(interval)

    async def check_health(self) -> None:
        """One round of ``GET {url}/health`` on every worker."""
        workers = list(self.members.workers)

        async def probe(w: Worker) -> bool:
            try:
                async with await self._get(w, "/health") as r:
                    await r.read()
                    return r.status == 200
            except UpstreamError:
                return False

        results = await asyncio.gather(*(probe(w) for w in workers))
        now = self.now()
        for w, ok in zip(workers, results, strict=True):
            self.members.record_health(w, ok, now)
        self._update_gauges()

    async def _get(self, w: Worker, path: str) -> UpstreamResponse:
        """``GET {w.url}{path}`` within the health-check timeout."""
        assert self.upstream is not None
        return await self.upstream.request("GET", w.url, path,
                                           timeout=self.config.health_timeout)

    async def scrape_engines(self) -> None:
        """One round of ``GET {url}/metrics`` on every worker: the engine-reported load
        (running, waiting, KV usage and capacity; :mod:`kvroute.server.engine_metrics`)
        goes into the router's ``WorkerState``, where policies such as ``llmd`` and
        ``least_load`` read it. A page without those gauges is skipped (warned once)."""
        workers = list(self.members.workers)

        async def scrape(w: Worker) -> EngineLoad | str:
            try:
                async with await self._get(w, "/metrics") as r:
                    text = await r.text()
                    if r.status != 200:
                        return f"HTTP {r.status}"
                    return engine_load(text) or "no SGLang or vLLM load gauges"
            except UpstreamError as e:
                return str(e)
            except ValueError as e:
                return f"unparsable ({e})"

        results = await asyncio.gather(*(scrape(w) for w in workers))
        for w, got in zip(workers, results, strict=True):
            if w.removed:
                continue
            if isinstance(got, str):
                if w.url not in self._unreadable:
                    self._unreadable.add(w.url)
                    log.warning("engine load of %s unavailable: %s (policies that read it see "
                                "zeros)", w.url, got)
                continue
            self._unreadable.discard(w.url)
            state = self.members.router.workers[self.members.workers.index(w)]
            state.running, state.waiting = got.running, got.waiting
            state.kv_usage, state.kv_capacity = got.kv_usage, got.kv_capacity

    # --- proxying ---------------------------------------------------------------------
    async def proxy(self, request: Request, route: str,
                    path: str) -> Response | StreamResponse:
        self.metrics.child(self.metrics.requests, route).inc()
        if self.draining:
            self.metrics.errors.labels("draining").inc()
            return _error(503, "the router is shutting down", "service_unavailable")
        raw = request.body
        try:
            body = json_body(raw)
            units = self.prompts.units(route, body)
            max_tokens = max_tokens_of(route, body)
        except BadRequest as e:
            self.metrics.errors.labels("bad_request").inc()
            return _error(400, str(e), "invalid_request_error")
        stream = streamed(body)
        session = session_key(request.headers.get(SESSION_HEADER))
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _HOP]
        exclude: set[str] = set()
        failed: _Failed | None = None
        for attempt in range(self.config.max_retries + 1):
            if attempt:
                self.metrics.retries.inc()
                delay = self.config.backoff_base * self.config.backoff_factor ** (attempt - 1)
                jitter = self.config.backoff_jitter
                await asyncio.sleep(delay * (1 + self.rng.uniform(-jitter, jitter)))
            req = RouteRequest(units, session=session, max_tokens=max_tokens)
            d = self._route(req, attempt, exclude)
            if d is None:
                break
            url = self.members.worker_of(d).url
            result = await self._attempt(request, d, path, raw, headers, stream)
            if not isinstance(result, _Failed):
                return result
            failed = result
            exclude.add(url)
            if not result.retry:
                break
        if failed is not None:
            return failed.response
        self.metrics.errors.labels("no_worker").inc()
        return _error(503, "no healthy worker is available", "service_unavailable")

    def _route(self, req: RouteRequest, attempt: int, exclude: set[str]) -> Dispatch | None:
        """Route ``req`` among available workers not in ``exclude``; log the decision."""
        m = self.members
        now = self.now()
        if m.router.index is not None and len(m):
            matched = m.router.view.matched(req)
        else:
            matched = np.zeros(len(m), dtype=np.int64)
        d = m.route(req, now, exclude)
        if d is None:
            return None
        w = m.worker_of(d)
        dec = d.decision
        mt = self.metrics
        mt.child(mt.decisions, w.url, dec.branch or "-").inc()
        n = len(req)
        hit = int(matched[d.worker]) if d.worker < len(matched) else 0
        self.metrics.prompt_units.inc(n)
        self.metrics.matched_units.inc(hit)
        if n:
            self.metrics.hit_ratio.observe(hit / n)
        if dec.predicted_s is not None:
            self.metrics.predicted.observe(dec.predicted_s)
        if self._log is not None:
            self._write_log({
                "event": "decision", "t": round(now, 6), "wall": time.time(), "rid": req.rid,
                "attempt": attempt, "worker": w.url, "branch": dec.branch,
                "predicted_s": dec.predicted_s, "units": n,
                "matched": {x.url: int(c) for x, c in zip(m.workers, matched, strict=False)},
                "in_flight": {x.url: s.in_flight for x, s in zip(m.workers, m.router.workers,
                                                                  strict=True)},
            })
        return d

    def _close(self, d: Dispatch, w: Worker, ok: bool, error: str | None = None,
               ttft_s: float | None = None, cached: int | None = None) -> None:
        """Close ``d`` exactly once, with its metrics and decision-log outcome."""
        now = self.now()
        if not self.members.close(d, now, ok, ttft_s=ttft_s, cached_tokens=cached):
            return
        e2e = now - d.sent_at
        if ok:
            self.metrics.e2e.observe(e2e)
            if ttft_s is not None:
                self.metrics.ttft.observe(ttft_s)
            if d.decision.predicted_s is not None:
                self.metrics.observed.observe(e2e)
                self.metrics.prediction_error.observe(e2e - d.decision.predicted_s)
            if cached is not None:
                self.metrics.cached_tokens.inc(cached)
        if self._log is not None:
            self._write_log({"event": "outcome", "t": round(now, 6), "rid": d.req.rid,
                             "worker": w.url, "ok": ok, "error": error,
                             "e2e_s": round(e2e, 6) if ok else None,
                             "ttft_s": None if ttft_s is None else round(ttft_s, 6),
                             "cached_tokens": cached})

    def _fail(self, w: Worker, kind: str) -> None:
        self.metrics.errors.labels(kind).inc()
        if self.members.record_failure(w, self.now()):
            log.warning("circuit breaker opened for %s", w.url)
            self._update_gauges()

    def _out_headers(self, upstream: UpstreamResponse, d: Dispatch,
                     w: Worker) -> dict[str, str]:
        out = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP}
        out["X-Kvroute-Worker"] = w.url
        if d.decision.predicted_s is not None:
            out["X-Kvroute-Predicted-Ms"] = f"{d.decision.predicted_s * 1000:.3f}"
        return out

    async def _attempt(self, request: Request, d: Dispatch, path: str, raw: bytes,
                       headers: list[tuple[str, str]],
                       stream: bool) -> Response | StreamResponse | _Failed:
        """Send one attempt to ``d``'s worker; ``d`` is closed whatever happens."""
        assert self.upstream is not None
        w = self.members.worker_of(d)
        st = _Outcome()
        try:
            try:
                upstream = await self.upstream.request("POST", w.url, path, raw, headers)
            except UpstreamTimeout:
                return self._failed(w, st, "upstream_timeout", 504, "timed out", retry=False)
            except UpstreamError as e:
                self.members.router.undelivered(d)
                return self._failed(w, st, "upstream_connect", 502, f"unreachable: {e}")
            async with upstream:
                sse = "text/event-stream" in upstream.headers.get("Content-Type", "")
                if upstream.status < 400 and (sse or stream):
                    return await self._stream(request, upstream, d, w, st)
                try:
                    data = await upstream.read()
                except UpstreamTimeout:
                    return self._failed(w, st, "upstream_timeout", 504, "timed out",
                                        retry=False)
                except UpstreamError as e:
                    return self._failed(w, st, "upstream_connect", 502, f"failed: {e}")
                resp = Response(data, upstream.status, self._out_headers(upstream, d, w))
                if upstream.status >= 400:  # the engine did not take the prompt in
                    self.members.router.undelivered(d)
                if upstream.status in RETRYABLE:
                    st.error = f"upstream_{upstream.status}"
                    self._fail(w, "upstream_status")
                    return _Failed(resp, retry=True)
                if upstream.status >= 400:  # the engine rejected the request itself
                    st.error = f"upstream_{upstream.status}"
                    self.metrics.errors.labels("upstream_rejected").inc()
                    return resp
                st.cached = cached_tokens_of(data)
                st.ok, st.error = True, None
                self.members.record_success(w)
                return resp
        except asyncio.CancelledError:
            # the client went away (the server cancels the handler) or the router stops
            transport = request.transport
            if transport is None or transport.is_closing():
                st.ok, st.error = False, "client_disconnect"
                self.metrics.errors.labels(st.error).inc()
            raise
        finally:
            self._close(d, w, st.ok, error=st.error, ttft_s=st.ttft, cached=st.cached)

    def _failed(self, w: Worker, st: _Outcome, kind: str, status: int, what: str,
                retry: bool = True) -> _Failed:
        st.error = kind
        self._fail(w, kind)
        return _Failed(_error(status, f"worker {w.url} {what}", "upstream_error"), retry=retry)

    async def _stream(self, request: Request, upstream: UpstreamResponse,
                      d: Dispatch, w: Worker, st: _Outcome) -> StreamResponse | _Failed:
        """Pass an SSE body through chunk by chunk. The first chunk is read before the
        client gets headers, so an upstream that dies before it can still be retried."""
        scanner = SSEScanner()
        resp: StreamResponse | None = None
        while True:
            try:
                chunk = await upstream.content.readany()
            except UpstreamError as e:
                if resp is None:
                    timeout = isinstance(e, UpstreamTimeout)
                    return self._failed(w, st, "upstream_timeout" if timeout
                                        else "upstream_connect", 504 if timeout else 502,
                                        f"failed before streaming: {type(e).__name__}",
                                        retry=not timeout)
                st.error = "upstream_midstream"
                self._fail(w, st.error)
                msg = json.dumps({"error": {"message": f"worker {w.url} failed mid-stream: "
                                            f"{type(e).__name__}", "type": "upstream_error"}})
                with contextlib.suppress(ConnectionError):
                    await resp.write(f"data: {msg}\n\n".encode())
                return resp
            if resp is None:
                resp = StreamResponse(upstream.status, self._out_headers(upstream, d, w))
                try:
                    await resp.prepare(request)
                except ConnectionError:
                    st.error = "client_disconnect"
                    self.metrics.errors.labels(st.error).inc()
                    return resp
            if not chunk:
                break
            if st.ttft is None:
                now = self.now()
                st.ttft = now - d.sent_at
                self.members.router.first_token(d, now)
            scanner.feed(chunk)
            try:
                await resp.write(chunk)
            except ConnectionError:
                st.error = "client_disconnect"
                self.metrics.errors.labels(st.error).inc()
                return resp
        scanner.close()
        st.cached = scanner.cached_tokens
        st.ok, st.error = True, None
        self.members.record_success(w)
        with contextlib.suppress(ConnectionError):
            await resp.write_eof()
        return resp

    # --- other routes -----------------------------------------------------------------
    async def models(self, request: Request) -> Response:
        self.metrics.requests.labels("models").inc()
        assert self.upstream is not None
        now = self.now()
        for w, a in zip(list(self.members.workers), self.members.available(now), strict=True):
            if not a:
                continue
            try:
                async with await self.upstream.request("GET", w.url, "/v1/models") as r:
                    data = await r.read()
                    if r.status < 500:
                        return Response(data, r.status, {
                            "Content-Type": r.headers.get("Content-Type", "application/json"),
                            "X-Kvroute-Worker": w.url})
            except UpstreamError:
                continue
        self.metrics.errors.labels("no_worker").inc()
        return _error(503, "no healthy worker is available", "service_unavailable")

    async def health(self, request: Request) -> Response:
        return json_response({"status": "ok"})

    async def liveness(self, request: Request) -> Response:
        return json_response({"status": "alive"})

    async def readiness(self, request: Request) -> Response:
        n = sum(self.members.available(self.now()))
        if self.draining:
            return json_response({"status": "draining", "healthy_workers": n}, status=503)
        if n == 0:
            return json_response({"status": "not ready", "healthy_workers": 0}, status=503)
        return json_response({"status": "ready", "healthy_workers": n})

    async def metrics_route(self, request: Request) -> Response:
        self._update_gauges()
        return Response(self.metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    # --- admin ------------------------------------------------------------------------
    def _authorized(self, request: Request) -> bool:
        key = self.config.api_key
        if not key:
            return True
        got = request.headers.get("Authorization", "")
        return got.startswith("Bearer ") and hmac.compare_digest(got[7:].strip().encode(),
                                                                 key.encode())

    def _workers_json(self) -> list[dict[str, Any]]:
        now = self.now()
        m = self.members
        return [{"url": w.url, "healthy": w.healthy, "available": a,
                 "circuit_open": now < w.open_until, "in_flight": s.in_flight,
                 "routed": s.routed, "completed": s.completed, "errors": s.errors,
                 "engine": {"running": s.running, "waiting": s.waiting,
                            "kv_usage": round(s.kv_usage, 4), "kv_capacity": s.kv_capacity}}
                for w, a, s in zip(m.workers, m.available(now), m.router.workers, strict=True)]

    @staticmethod
    def _admin_url(request: Request) -> str:
        url = request.query.get("url")
        if url is None and request.body:
            try:
                body = request.json()
            except (ValueError, UnicodeDecodeError) as e:
                raise BadRequest("the request body is not valid JSON") from e
            if isinstance(body, dict) and isinstance(body.get("url"), str):
                url = body["url"]
        if not url:
            raise BadRequest("give the worker as ?url= or a JSON body {\"url\": ...}")
        return url

    async def workers_admin(self, request: Request) -> Response:
        if not self._authorized(request):
            self.metrics.errors.labels("unauthorized").inc()
            return _error(401, "missing or wrong API key", "unauthorized",
                          headers={"WWW-Authenticate": "Bearer"})
        if request.method == "GET":
            return json_response({"policy": self.policy_name,
                                      "workers": self._workers_json()})
        adding = request.method == "POST" and request.path != "/remove_worker"
        try:
            url = self._admin_url(request)
            if adding:
                w = self.members.add(url)
                self._update_gauges()
                log.info("added worker %s", w.url)
                return json_response({"added": w.url, "workers": self._workers_json()})
            w = self.members.remove(url, self.now(), on_forced_close=self._forced_close)
            self.metrics.forget_worker(w.url)
            log.info("removed worker %s", w.url)
            return json_response({"removed": w.url, "workers": self._workers_json()})
        except BadRequest as e:
            return _error(400, str(e), "invalid_request_error")
        except ConfigError as e:
            status = 409 if "already" in str(e) else 404 if "not a member" in str(e) else 400
            return _error(status, str(e), "invalid_request_error")

    def _forced_close(self, d: Dispatch, w: Worker) -> None:
        self._close(d, w, ok=False, error="worker_removed")


def build_app(config: ServeConfig, policy: RoutingPolicy) -> RouterApp:
    """The router, not yet listening (``await app.start(host, port)``)."""
    return RouterApp(config, policy)
