"""The live router: a reverse proxy in front of OpenAI-compatible / SGLang engines, on the
lean HTTP server of :mod:`kvroute.server.http_server` (requests to the workers go through
the lean client of :mod:`kvroute.server.upstream`).

Contract:

* ``build_app(ServeConfig, policy)`` returns the :class:`RouterApp`; ``await
  app.start(host, port)`` starts the health and engine checks and listens; ``await
  app.stop()`` stops gracefully: no new connections, new requests on open ones get 503
  (draining), the requests in flight get up to ``drain_timeout`` seconds, then every
  connection, the checks and the upstream pool close. Routes:
  ``POST /v1/completions``, ``/v1/chat/completions``, ``/generate``, ``/v1/responses``
  (proxied to the worker the policy picks, or for a ``previous_response_id`` the one that
  stored it: :mod:`kvroute.server.proxy`), anything under ``/v1/responses/{id}`` (to the
  worker that stored ``id``), the engines' other endpoints (embeddings, tokenize, rerank,
  ...: to the least busy worker, :mod:`kvroute.server.passthrough`), ``GET /v1/models`` (from the
  first available worker),
  ``/health``, ``/readiness`` (503 when no worker is available or the router is
  draining), ``/liveness``, ``/metrics`` (Prometheus text), admin ``GET/POST/DELETE
  /workers`` and SGLang's ``POST /add_worker?url=`` / ``/remove_worker?url=``
  (:mod:`kvroute.server.admin`). Anything else is a JSON 404, or 405 on a known path.
* The app owns one :class:`~kvroute.routing.router.Router` (the policy, its accounting and
  the workers' state) and one :class:`~kvroute.server.membership.Membership` (the same
  workers as URLs, with health and circuit breakers); the router keeps a prefix index
  whatever the policy, for the estimated hit ratio in ``/metrics`` and the decision log.
  Every ``health_interval`` / ``metrics_interval`` seconds the workers' ``/health`` and
  ``/metrics`` are read (:mod:`kvroute.server.checks`).
* KV events (``kv_events``: ``ENDPOINT[,REPLAY]`` or ``-`` per worker URL, in order):
  each feed fills an exact index that the router believes for that worker while in sync
  (:mod:`kvroute.server.kv_events`); it needs a tokenizer (the router must route on the
  engines' token ids). Workers added through the admin API may name a feed too.
* Requests are read by :mod:`kvroute.protocol.request_body` (a body that breaks it is a
  400 before any worker is tried): the routing units are the first prompt's, token ids
  with a tokenizer (chat: ``messages`` through the model's chat template when
  ``chat_template`` is set, else a Llama-3-like one), else characters, as SGLang's
  router does. The clock is ``time.monotonic()`` since the app started. The body goes
  to the worker as received, except with ``stream_usage``: a streamed OpenAI-API request
  without ``stream_options`` gets ``include_usage`` (its stream's usage event, which
  the client did not ask for, is taken out on the way back); and with ``dp_rank_field``,
  a request for a data-parallel rank gets that member naming its rank
  (:mod:`kvroute.server.proxy`).
* Errors of the router itself are JSON ``{"error": {"message", "type"}}``, never tracebacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from kvroute.errors import ConfigError
from kvroute.protocol.request_body import (
    SESSION_HEADER,
    BadRequest,
    PromptEncoder,
    adapter_of,
    json_body,
    max_tokens_of,
    previous_response_of,
    session_key,
    streamed,
)
from kvroute.routing.base import RoutingPolicy
from kvroute.routing.prefix_index import DEFAULT_INDEX_CAPACITY
from kvroute.routing.router import Router
from kvroute.server.admin import Admin
from kvroute.server.checks import WorkerChecks
from kvroute.server.decision_log import DecisionLog
from kvroute.server.http_messages import (
    Request,
    Response,
    StreamResponse,
    error_response,
    json_response,
)
from kvroute.server.http_server import HttpServer
from kvroute.server.kv_events import KvEventFeeds, parse_feeds
from kvroute.server.membership import Membership, worker_urls
from kvroute.server.passthrough import PASSTHROUGH, Passthrough
from kvroute.server.proxy import Forwarder
from kvroute.server.router_metrics import CONTENT_TYPE_LATEST, RouterMetrics
from kvroute.server.upstream import Upstream
from kvroute.workloads.chat_template import ChatTemplate
from kvroute.workloads.tokenizer import Tokenizer

__all__ = ["RouterApp", "ServeConfig", "build_app"]

log = logging.getLogger("kvroute.server")


@dataclass
class ServeConfig:
    worker_urls: list[str]
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
    # the prefix index's bound per worker, in routing units; None: each engine's reported
    # KV pool times the routing units a token, measured from the engines' prompt-token
    # reports (before any: 1 with a tokenizer, else CHARS_PER_TOKEN), 2^24 until it
    # reports a pool
    index_capacity: int | None = None
    # one ``ENDPOINT[,REPLAY]`` (or ``-``) per worker URL: its engine's KV events
    kv_events: list[str] | None = None
    kv_events_engine: str = "vllm"  # the events' schema: vllm or sglang
    # ask the engine for a streamed request's usage event when the client did not (OpenAI
    # APIs, no stream_options), and take the event out of the client's stream: the
    # engine's cached tokens then reach the policy from every streamed request
    stream_usage: bool = False
    # the engines' cap on running requests where their /metrics does not report one
    # (vLLM's --max-num-seqs); None: only what the engines report
    max_running: int | None = None
    # a body member that names a data-parallel rank's requests' rank too (SGLang:
    # data_parallel_rank, routed_dp_rank in newer versions); None: the header only
    dp_rank_field: str | None = None
    # LoRA adapters' names (``model``, SGLang's ``lora_path``): the prefix index holds each
    # adapter's prompts apart from the others' and the base model's, as the engines do
    lora_adapters: frozenset[str] = frozenset()
    # the engines' cap on LoRA adapters running at once where their /metrics does not say
    # (SGLang's --max-loras-per-batch); None: only what the engines report
    max_loras: int | None = None

    def validate(self) -> None:
        if self.index_capacity is not None and self.index_capacity < 1:
            raise ConfigError(f"--index-capacity must be >= 1, got {self.index_capacity}")
        if self.max_running is not None and self.max_running < 1:
            raise ConfigError(f"--max-running must be >= 1, got {self.max_running}")
        if self.max_loras is not None and self.max_loras < 1:
            raise ConfigError(f"--max-loras must be >= 1, got {self.max_loras}")
        if "" in self.lora_adapters:
            raise ConfigError("--lora-adapters: an adapter's name must not be empty")
        at_least_0 = (self.health_interval, self.metrics_interval, self.max_retries,
                      self.backoff_base, self.drain_timeout)
        above_0 = (self.request_timeout, self.health_timeout, self.connect_timeout)
        if not (all(v >= 0 for v in at_least_0) and all(v > 0 for v in above_0)):  # NaN too
            raise ConfigError("need --health-interval >= 0, --metrics-interval >= 0, "
                              "--request-timeout > 0, "
                              "--max-retries >= 0 and non-negative backoff/drain times")


_error = error_response
CHARS_PER_TOKEN = 4.0  # routing on characters: a KV pool of n tokens holds about 4n of them
INDEX_NODE_UNITS = 200  # a prefix-index node costs ~1 KB, the keys of ~200 token ids (5 B
# each); ASCII characters cost 1 B each, so this over-counts nodes for them (conservative)


Route = Callable[[Request], Awaitable[Response | StreamResponse]]


class RouterApp:
    def __init__(self, config: ServeConfig, policy: RoutingPolicy) -> None:
        config.validate()
        self.config = config
        urls = worker_urls(config.worker_urls)
        self.router = Router(policy, len(urls), keep_index=True,
                             index_capacity=config.index_capacity or DEFAULT_INDEX_CAPACITY)
        if self.router.index is not None:  # a long run of short prompts stays bounded too
            self.router.index.node_units = INDEX_NODE_UNITS
        self.members = Membership(urls, self.router, failure_threshold=config.failure_threshold,
                                  cooldown_s=config.cooldown_s,
                                  health_checks=config.health_interval > 0)
        self.prompts = PromptEncoder(config.tokenizer, config.chat_template)
        self.metrics = RouterMetrics()
        feeds = parse_feeds(config.kv_events, len(urls))
        if any(feeds) and config.tokenizer is None:
            raise ConfigError("--kv-events needs --tokenizer: the engines' events carry "
                              "token ids, and the router must route on the same ids")
        self.kv_events = KvEventFeeds(self.router, self.members,
                                      engine=config.kv_events_engine)
        for url, spec in zip(urls, feeds, strict=True):
            if spec is not None:
                self.kv_events.add(url, spec)
        self.metrics.registry.register(self.kv_events)
        self.t0 = time.monotonic()
        self.draining = False
        self.decisions = DecisionLog(config.decision_log)
        self.upstream = Upstream(connect_timeout=config.connect_timeout,
                                 total_timeout=config.request_timeout)
        self.forwarder = Forwarder(
            self.router, self.members, self.upstream, self.metrics, self.decisions, self.now,
            max_retries=config.max_retries, backoff_base=config.backoff_base,
            backoff_factor=config.backoff_factor, backoff_jitter=config.backoff_jitter,
            seed=config.seed, rank_field=config.dp_rank_field)
        self.passthrough = Passthrough(self.router, self.members, self.upstream, self.metrics,
                                       self.forwarder.owners, self.now, self.forwarder.fail,
                                       config.max_retries)
        per_token = 1.0 if config.tokenizer is not None else CHARS_PER_TOKEN
        self.checks = WorkerChecks(
            self.members, self.router, self.upstream, config.health_timeout, self.now,
            units_per_kv_token=per_token if config.index_capacity is None else None,
            max_running=config.max_running or 0, max_loras=config.max_loras or 0)
        self.admin = Admin(self.router, self.members, self.metrics, self.decisions, self.now,
                           api_key=config.api_key, policy_name=policy.name,
                           kv_events=self.kv_events if config.tokenizer is not None else None)
        self._tasks: list[asyncio.Task[None]] = []
        self.server: HttpServer | None = None

        def proxied(route: str, path: str) -> Route:
            async def handler(request: Request) -> Response | StreamResponse:
                return await self.proxy(request, route, path)
            return handler

        admin = self.admin.workers
        self.routes: dict[tuple[str, str], Route] = {
            ("POST", "/v1/completions"): proxied("completions", "/v1/completions"),
            ("POST", "/v1/chat/completions"): proxied("chat", "/v1/chat/completions"),
            ("POST", "/generate"): proxied("generate", "/generate"),
            ("POST", "/v1/responses"): proxied("responses", "/v1/responses"),
            **{("POST", path): self.passthrough.least_busy for path in PASSTHROUGH},
            ("GET", "/v1/models"): self.passthrough.models,
            ("GET", "/health"): self.health,
            ("GET", "/liveness"): self.liveness,
            ("GET", "/readiness"): self.readiness,
            ("GET", "/metrics"): self.metrics_route,
            ("GET", "/workers"): admin,
            ("POST", "/workers"): admin,
            ("DELETE", "/workers"): admin,
            ("POST", "/add_worker"): admin,
            ("POST", "/remove_worker"): admin,
        }
        self._known = {path for _, path in self.routes}

    # --- serving ------------------------------------------------------------------------
    async def handle(self, request: Request) -> Response | StreamResponse:
        """Every request: its route, or a JSON 404/405; unexpected errors become JSON 500s."""
        route = self.routes.get((request.method, request.path))
        if route is None and request.path.startswith("/v1/responses/") \
                and request.path.count("/") >= 3 and request.path.split("/")[3]:
            route = self.passthrough.to_owner
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
        """Start the periodic checks and listen on ``host:port`` (port 0: a free one, then
        :attr:`port`); ``OSError`` when it cannot listen."""
        self.server = HttpServer(self.handle, max_body=256 * 1024 ** 2)
        try:
            await self.server.start(host, port)
        except BaseException:
            self.server = None
            await self.cleanup()
            raise
        self._start_checks()  # before the loop runs again: no request comes in first

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

    def _start_checks(self) -> None:
        """Start the periodic health and engine checks."""
        for interval, check in ((self.config.health_interval, self.checks.check_health),
                                (self.config.metrics_interval, self.checks.scrape_engines)):
            if interval > 0:
                self._tasks.append(asyncio.create_task(self._every(interval, check)))
        self.kv_events.start()

    async def cleanup(self) -> None:
        """Stop the checks and the KV-event feeds, close the upstream pool and the
        decision log."""
        await self.kv_events.close()
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.forwarder.holds.close()
        await self.upstream.close()
        self.decisions.close()

    async def _on_shutdown(self) -> None:
        """Draining: wait until no dispatch is open, or ``drain_timeout`` seconds."""
        self.draining = True
        loop = asyncio.get_running_loop()
        end = loop.time() + self.config.drain_timeout
        while self.router.open_dispatches or len(self.forwarder.holds):
            if loop.time() >= end:
                log.warning("shutdown: %d requests still in flight after %.0f s",
                            self.router.open_dispatches, self.config.drain_timeout)
                return
            await asyncio.sleep(0.05)

    @staticmethod
    async def _every(interval: float, check: Callable[[], Awaitable[None]]) -> None:
        while True:
            await check()
            await asyncio.sleep(interval)

    async def proxy(self, request: Request, route: str,
                    path: str) -> Response | StreamResponse:
        self.metrics.child(self.metrics.requests, route).inc()
        if self.draining:
            self.metrics.errors.labels("draining").inc()
            return _error(503, "the router is shutting down", "service_unavailable")
        try:
            body = json_body(request.body)
            units = self.prompts.units(route, body)
            max_tokens = max_tokens_of(route, body)
            previous = previous_response_of(body) if route == "responses" else None
            adapter = adapter_of(route, body, self.config.lora_adapters)
            reply = (self.prompts.reply_units(route, body)
                     if self.router.policy.records_replies else None)
        except BadRequest as e:
            self.metrics.errors.labels("bad_request").inc()
            return _error(400, str(e), "invalid_request_error")
        stream = streamed(body)
        usage_asked = self.config.stream_usage and stream \
            and route not in ("generate", "responses") and "stream_options" not in body
        del body  # the parsed body (a copy of the prompt) need not live while it runs
        session = session_key(request.header(SESSION_HEADER))
        return await self.forwarder.forward(request, path, units, session=session,
                                            max_tokens=max_tokens, stream=stream,
                                            usage_asked=usage_asked,
                                            track_id=route == "responses", previous=previous,
                                            reply=reply, adapter=adapter)

    # --- other routes -----------------------------------------------------------------
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
        """Prometheus text; the per-worker health and in-flight gauges are set here, when
        read, not per request."""
        m, mt = self.members, self.metrics
        for w, a, s in zip(m.workers, m.available(self.now()), self.router.workers,
                           strict=True):
            mt.child(mt.healthy, w.url).set(1 if a else 0)
            mt.child(mt.in_flight, w.url).set(s.in_flight)
        mt.set_policy_telemetry(self.router.policy.telemetry())
        return Response(self.metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def build_app(config: ServeConfig, policy: RoutingPolicy) -> RouterApp:
    """The router, not yet listening (``await app.start(host, port)``)."""
    return RouterApp(config, policy)
