"""Forwarding a client's request to a worker: routing, retries, streaming, accounting.

Contract:

* ``Forwarder.forward(request, path, units, ...)`` sends an already parsed request (its
  routing units, session, ``max_tokens``, whether it streams; parsing is the app's) to the
  worker the policy picks and returns the worker's response with ``X-Kvroute-Worker`` and,
  when the policy predicts, ``X-Kvroute-Predicted-Ms`` (hop-by-hop headers dropped both
  ways).
* Routing: ``Router.route`` with the mask ``Membership.allowed(now, exclude)``: available
  workers, less those this request already failed on. The policy picks among them; none
  left: 503 ``service_unavailable``.
* Holding (late binding): before its first attempt a request may be held back by the
  policy (``RoutingPolicy.holds``; :mod:`kvroute.server.holds`), counted in
  ``kvroute_held_seconds``; ``kvroute_ttft_seconds`` and ``kvroute_e2e_seconds`` include
  the time held (the client's latency), the policy learns from the times after routing.
* Accounting: every routed attempt is closed exactly once (``try``/``finally``) with
  ``Router.complete``: ok on success (TTFT at the first streamed chunk, ``cached_tokens``
  and ``completion_tokens`` read from the body or the SSE events by the readers the app
  gives), not ok on upstream
  errors, timeouts, client disconnects and cancellation. A prompt the worker never took
  in (refused connection, an error status) is taken back from the prefix index
  (``Router.undelivered``). Request failures count towards the worker's circuit breaker
  (``Membership.record_failure``), successes reset it.
* Retries: connection errors and 5xx/408/429 before anything was sent to the client are
  retried on another worker, up to ``max_retries`` times with jittered exponential backoff
  (``backoff_base * backoff_factor ** (attempt - 1)``, times ``1 +- backoff_jitter``) from
  an RNG seeded with ``seed``. Timeouts are not retried (504). A stream's first chunk is
  read before the client gets headers (then sent with them), so a stream that dies
  before it is still retried; the later chunks are written to the client as they
  arrive, those of one socket read together (and the end of the body with them when it
  came in that read), in the upstream connection's callback while the client's
  connection takes them at once (no task woken per chunk), else by the handler once the
  client's buffer drains. A stream that fails midway ends
  with an SSE error event whose data is the shared error body
  (:func:`kvroute.protocol.response_body.error_body`: ``upstream_error``, ``code`` 504
  for a timeout, else 502).
* A worker that is a rank of a data-parallel engine (``URL@R``,
  :mod:`kvroute.server.membership`) is sent the request at its base URL with the header
  ``X-data-parallel-rank: R`` in place of any the client sent, and with ``rank_field``
  the body's last member ``"rank_field": R`` too (SGLang reads the rank from the body).
* The Responses API (``track_id``): the response id of each answer (its body, or its
  stream's first event) is recorded with the worker that gave it
  (:class:`~kvroute.server.response_owners.ResponseOwners`), even when the client left
  before the end (the engine stores it all the same). A request that continues one
  (``previous``, its ``previous_response_id``) goes to that worker alone: no policy
  choice among the others and no retry elsewhere (they do not have it); 503 while it is
  unavailable. An id the router did not record is routed as any request (the engine
  that has it, if any, answers; another says 404). The requests under
  ``/v1/responses/{id}`` go to the worker that stored it (:mod:`kvroute.server.passthrough`,
  which reads ``owners``). A ``background``
  request's answer comes before the engine has run it (``status`` ``queued`` or
  ``in_progress``): its dispatch closes then, not ok (``background``), so the policy
  learns no latency from it; the router does not see the work it leaves on the engine.
* Replies (``reply``, given when the policy records them): a successful answer's text
  (the body's first choice, or its stream's deltas, read when it ends) is turned into
  units by ``reply`` and recorded after the prompt's with ``Router.replied`` before the
  dispatch closes: the engine caches the reply, and a conversation's next turn begins
  with it. A stream over ``TEXT_LIMIT`` bytes, or an answer without text, records none.
* Telemetry: Prometheus counters and histograms (:mod:`kvroute.server.router_metrics`) and
  the decision log (:mod:`kvroute.server.decision_log`), per decision and per outcome.
  For each successful request whose engine reported ``cached_tokens``, the hit counters
  ``kvroute_hit_{prompt,available,expected,reported}_units`` and
  ``kvroute_hit_reported_tokens`` (by worker and by index kind, exact or approx) put what
  the router expected beside what the engine captured (``reported_units``: the engine's
  count in the router's units, see ``Router.complete``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from kvroute.protocol.request_body import RANK_HEADER, ask_usage, last_member
from kvroute.protocol.response_body import (
    WORKER_HEADER,
    SSEScanner,
    Usage,
    UsageStripper,
    answer_text,
    counts_of,
    error_body,
    response_id_of,
)
from kvroute.routing.base import RouteRequest
from kvroute.routing.router import Dispatch, Router, cached_units
from kvroute.server.decision_log import DecisionLog
from kvroute.server.holds import Holds
from kvroute.server.http_messages import Request, Response, StreamResponse, error_response
from kvroute.server.membership import Membership, Worker
from kvroute.server.response_owners import ResponseOwners
from kvroute.server.router_metrics import RouterMetrics
from kvroute.server.upstream import Upstream, UpstreamError, UpstreamResponse, UpstreamTimeout

__all__ = ["RETRYABLE", "Forwarder", "end_to_end_headers"]

RETRYABLE = frozenset({408, 429, 500, 502, 503, 504})
_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
                  "trailer", "transfer-encoding", "upgrade", "host", "content-length",
                  "accept-encoding", "content-encoding"})
_HOP_RAW = frozenset(h.encode() for h in _HOP)
_RANK_LOWER = RANK_HEADER.lower()
_RANK_RAW = _RANK_LOWER.encode()

log = logging.getLogger("kvroute.server")


def end_to_end_headers(request: Request, rank: bool = True) -> list[tuple[str, str]]:
    """The client's headers a worker is sent: all but the hop-by-hop ones (and, with
    ``rank`` False, but a data-parallel rank's, which the router chooses)."""
    return [(k.decode("utf-8", "surrogateescape"), v.decode("utf-8", "surrogateescape"))
            for k, v in request.raw_headers
            if k.lower() not in _HOP_RAW and (rank or k.lower() != _RANK_RAW)]


@dataclass
class _Failed:
    """An attempt that failed before anything reached the client."""

    response: Response
    retry: bool


_NO_USAGE = Usage()  # frozen: shared


@dataclass
class _Outcome:
    ok: bool = False
    error: str | None = "cancelled"
    ttft: float | None = None
    usage: Usage = _NO_USAGE  # the engine's counts, what it reported of them
    response_id: str | None = None  # a Responses API answer's (its body's)
    reader: SSEScanner | None = None  # a stream's, which reads its response id or text
    reply: np.ndarray | None = None  # the prompt's units and its reply's, to record


def _continued(units: np.ndarray, reply: Callable[[str], np.ndarray],
               text: str | None) -> np.ndarray | None:
    """The request's units followed by its reply's (None without a reply's text)."""
    return None if not text else np.concatenate([units, reply(text)])


class _Relay:
    """A stream's pass-through (an upstream :class:`~kvroute.server.upstream.Sink`): the
    chunks of one socket read go to the client in one write as they arrive, with the end
    of the body when it came in that read, while the client's connection takes them
    without waiting; otherwise they are left to :meth:`Forwarder._stream`'s loop. That
    loop writes what it reads before it next waits, so the end the relay writes (the body
    ended with nothing queued) always comes after every chunk."""

    __slots__ = ("pending", "reader", "resp")

    def __init__(self, resp: StreamResponse, reader: SSEScanner) -> None:
        self.resp = resp
        self.reader = reader
        self.pending: list[bytes] = []

    def take(self, chunk: bytes) -> bool:
        if not self.pending and not self.resp.writable():
            return False
        self.pending.append(chunk)
        return True

    def flush(self, end: bool) -> None:
        pending = self.pending
        if not pending and not end:
            return
        data = b"".join(pending) if len(pending) != 1 else pending[0]
        self.pending = []
        if data:
            self.reader.feed(data)
        self.resp.write_nowait(data, eof=end)


class Forwarder:
    def __init__(self, router: Router, members: Membership, upstream: Upstream,
                 metrics: RouterMetrics, decisions: DecisionLog, clock: Callable[[], float], *,
                 max_retries: int, backoff_base: float, backoff_factor: float,
                 backoff_jitter: float, seed: int, rank_field: str | None = None) -> None:
        self.rank_field = rank_field
        self.router = router
        self.members = members
        self.upstream = upstream
        self.metrics = metrics
        self.decisions = decisions
        self.clock = clock
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_factor = backoff_factor
        self.backoff_jitter = backoff_jitter
        self.rng = random.Random(seed)
        self.owners = ResponseOwners()
        self.holds = Holds(router, lambda now: members.allowed(now, set()), clock)

    async def forward(self, request: Request, path: str, units: np.ndarray, *,
                      session: int | None, max_tokens: int | None,
                      stream: bool, usage_asked: bool = False, track_id: bool = False,
                      previous: str | None = None,
                      reply: Callable[[str], np.ndarray] | None = None,
                      adapter: str | None = None) -> Response | StreamResponse:
        """Route and send ``request`` (body as received, or with the stream's usage asked
        for when ``usage_asked``) to ``path`` on a worker, with retries; see the module
        doc. ``reply``: the units its reply's text adds (given when the policy records
        replies, :meth:`Router.replied`); ``adapter``: the LoRA adapter it is for."""
        raw = ask_usage(request.body) if usage_asked else request.body
        pin = None if previous is None else self.owners.owner(previous)
        headers = end_to_end_headers(request)
        exclude: set[str] = set()
        failed: _Failed | None = None
        held = 0.0  # seconds the policy held it back before its first attempt
        first = RouteRequest(units, session=session, max_tokens=max_tokens, streamed=stream,
                             adapter=adapter)
        if pin is None:  # not held: routed at once, with the match the hold check read
            held = await self.holds.wait(first)
            self.metrics.held.observe(held)
        for attempt in range(self.max_retries + 1):
            if attempt:
                self.metrics.retries.inc()
                delay = self.backoff_base * self.backoff_factor ** (attempt - 1)
                jitter = self.backoff_jitter
                await asyncio.sleep(delay * (1 + self.rng.uniform(-jitter, jitter)))
            req = first if not attempt else RouteRequest(
                units, session=session, max_tokens=max_tokens, streamed=stream, adapter=adapter)
            routed = self._route(req, attempt, exclude, pin, 0.0 if attempt else held)
            if routed is None:
                break
            d, w = routed
            result = await self._attempt(request, d, w, path, raw, headers, stream,
                                         usage_asked, track_id, reply)
            if not isinstance(result, _Failed):
                return result
            failed = result
            exclude.add(w.url)
            if not result.retry or pin is not None:
                break
        if failed is not None:
            return failed.response
        if pin is not None:
            self.metrics.errors.labels("owner_unavailable").inc()
            return error_response(503, f"the worker that stored response {previous!r} "
                                       f"({pin}) is not available", "service_unavailable")
        self.metrics.errors.labels("no_worker").inc()
        return error_response(503, "no healthy worker is available", "service_unavailable")

    def _route(self, req: RouteRequest, attempt: int, exclude: set[str],
               pin: str | None = None, held: float = 0.0) -> tuple[Dispatch, Worker] | None:
        """Route ``req`` among available workers not in ``exclude`` (only ``pin``, if
        given), ``held`` seconds after it arrived; record the decision."""
        now = self.clock()
        allowed = self.members.allowed(now, exclude)
        if pin is not None:
            allowed &= np.array([w.url == pin for w in self.members.workers], dtype=bool)
        if not allowed.any():
            return None
        matched = self.router.matched(req)  # before the router records the prompt
        d = self.router.route(req, now, allowed)
        w = self.members.workers[d.worker]
        dec = d.decision
        mt = self.metrics
        mt.child(mt.decisions, w.url, dec.branch or "-").inc()
        n = len(req)
        hit = int(matched[d.worker])
        mt.prompt_units.inc(n)
        mt.matched_units.inc(hit)
        if n:
            mt.hit_ratio.observe(hit / n)
        if dec.predicted_s is not None:
            mt.predicted.observe(dec.predicted_s)
        self.decisions.decision(now, req, attempt, d, w.url, self.members.workers, matched,
                                self.router.workers, held)
        d.waited = held
        self.holds.kick()  # the next held request's turn, with this one routed
        return d, w

    def _close(self, d: Dispatch, w: Worker, ok: bool, error: str | None = None,
               ttft_s: float | None = None, usage: Usage = _NO_USAGE) -> None:
        """Close ``d`` exactly once, with its metrics and decision-log outcome."""
        now = self.clock()
        cached, prompt = usage.cached_tokens, usage.prompt_tokens
        if not self.router.complete(d, now, ok=ok, ttft_s=ttft_s, cached_tokens=cached,
                                    prompt_tokens=prompt,
                                    output_tokens=usage.completion_tokens):
            return  # closed already (its worker was removed)
        self.holds.kick()
        if ok:
            e2e = now - d.sent_at
            self.metrics.e2e.observe(e2e + d.waited)  # the client's latency: held time too
            if ttft_s is not None:
                self.metrics.ttft.observe(ttft_s + d.waited)
            if d.decision.predicted_s is not None:
                self.metrics.observed.observe(e2e)
                self.metrics.prediction_error.observe(e2e - d.decision.predicted_s)
            if cached is not None:
                mt = self.metrics
                mt.cached_tokens.inc(cached)
                labels = (w.url, "exact" if d.exact else "approx")
                mt.child(mt.hit_prompt, *labels).inc(len(d.req))
                mt.child(mt.hit_available, *labels).inc(d.available)
                mt.child(mt.hit_expected, *labels).inc(d.expected)
                mt.child(mt.hit_reported, *labels).inc(cached)
                mt.child(mt.hit_reported_units, *labels).inc(
                    cached_units(cached, prompt, len(d.req)) or 0)
        self.decisions.outcome(now, d, w.url, ok, error, ttft_s=ttft_s, cached=cached)

    def fail(self, w: Worker, kind: str) -> None:
        """A request failure on ``w``: counted, and towards its circuit breaker."""
        self.metrics.errors.labels(kind).inc()
        if self.members.record_failure(w, self.clock()):
            log.warning("circuit breaker opened for %s", w.url)

    def _out_headers(self, upstream: UpstreamResponse, d: Dispatch,
                     w: Worker) -> dict[str, str]:
        out = {k: v for k, v in upstream.header_items() if k.lower() not in _HOP}
        out[WORKER_HEADER] = w.url
        if d.decision.predicted_s is not None:
            out["X-Kvroute-Predicted-Ms"] = f"{d.decision.predicted_s * 1000:.3f}"
        return out

    async def _attempt(self, request: Request, d: Dispatch, w: Worker, path: str, raw: bytes,
                       headers: list[tuple[str, str]], stream: bool, usage_asked: bool,
                       track_id: bool = False,
                       reply: Callable[[str], np.ndarray] | None = None,
                       ) -> Response | StreamResponse | _Failed:
        """Send one attempt to ``w``, ``d``'s worker; ``d`` is closed whatever happens."""
        st = _Outcome()
        if track_id or reply is not None:
            st.reader = SSEScanner(response_id=track_id, text=reply is not None)
        try:
            try:
                if w.rank is not None:  # the rank is the router's choice, not the client's
                    headers = [h for h in headers if h[0].lower() != _RANK_LOWER]
                    headers += w.headers()
                    if self.rank_field:
                        raw = last_member(raw, self.rank_field, w.rank)
                upstream = await self.upstream.request("POST", w.base, path, raw, headers)
            except UpstreamTimeout:
                return self._failed(w, st, "upstream_timeout", 504, "timed out", retry=False)
            except UpstreamError as e:
                self.router.undelivered(d)
                return self._failed(w, st, "upstream_connect", 502, f"unreachable: {e}")
            async with upstream:
                sse = "text/event-stream" in (upstream.header("Content-Type") or "")
                if upstream.status < 400 and (sse or stream):
                    out = await self._stream(request, upstream, d, w, st, usage_asked,
                                             track_id)
                    if st.ok and reply is not None and st.reader is not None:
                        st.reply = _continued(d.req.units, reply, st.reader.text)
                    return out
                try:
                    data = await upstream.read()
                except UpstreamTimeout:
                    return self._failed(w, st, "upstream_timeout", 504, "timed out",
                                        retry=False)
                except UpstreamError as e:
                    return self._failed(w, st, "upstream_connect", 502, f"failed: {e}")
                resp = Response(data, upstream.status, self._out_headers(upstream, d, w))
                if upstream.status >= 400:  # the engine did not take the prompt in
                    self.router.undelivered(d)
                if upstream.status in RETRYABLE:
                    st.error = f"upstream_{upstream.status}"
                    self.fail(w, "upstream_status")
                    return _Failed(resp, retry=True)
                if upstream.status >= 400:  # the engine rejected the request itself
                    st.error = f"upstream_{upstream.status}"
                    self.metrics.errors.labels("upstream_rejected").inc()
                    return resp
                st.usage = counts_of(data)
                st.ok, st.error = True, None
                self.members.record_success(w)
                if reply is not None:
                    st.reply = _continued(d.req.units, reply, answer_text(data))
                if track_id:
                    with contextlib.suppress(ValueError):
                        obj = json.loads(data)
                        st.response_id = response_id_of(obj)
                        if isinstance(obj, dict) and obj.get("status") in (
                                "queued", "in_progress"):  # a background request
                            st.ok, st.error = False, "background"  # not done: no latency
                return resp
        except asyncio.CancelledError:
            # the client went away (the server cancels the handler) or the router stops
            transport = request.transport
            if transport is None or transport.is_closing():
                st.ok, st.error = False, "client_disconnect"
                self.metrics.errors.labels(st.error).inc()
            raise
        finally:
            if st.ok and st.reply is not None:
                self.router.replied(d, st.reply, self.clock())
                self.metrics.reply_units.inc(len(st.reply) - len(d.req))
            self._close(d, w, st.ok, error=st.error, ttft_s=st.ttft, usage=st.usage)
            rid = st.response_id or (st.reader.response_id if st.reader else None)
            if rid is not None:
                self.owners.record(rid, w.url)

    def _failed(self, w: Worker, st: _Outcome, kind: str, status: int, what: str,
                retry: bool = True) -> _Failed:
        st.error = kind
        self.fail(w, kind)
        return _Failed(error_response(status, f"worker {w.url} {what}", "upstream_error"),
                       retry=retry)

    async def _stream(self, request: Request, upstream: UpstreamResponse, d: Dispatch,
                      w: Worker, st: _Outcome, usage_asked: bool,
                      track: bool = False) -> StreamResponse | _Failed:
        """Pass an SSE body through chunk by chunk. The first chunk is read before the
        client gets headers, so an upstream that dies before it can still be retried;
        after it, chunks go out as they arrive (:class:`_Relay`), and this loop only
        writes those the client's connection could not take at once, and sees the end.
        When the router asked for the usage event (``usage_asked``), every chunk goes
        through this loop and :class:`UsageStripper`, which takes the event out. A
        Responses API stream (``track``) goes through this loop too: its first token is its
        first ``*.delta`` event (``response.created`` comes before any)."""
        reader = st.reader or SSEScanner()
        strip = UsageStripper() if usage_asked else None
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
                self.fail(w, st.error)
                msg = json.dumps(error_body(f"worker {w.url} failed mid-stream: "
                                            f"{type(e).__name__}", "upstream_error",
                                            504 if isinstance(e, UpstreamTimeout) else 502))
                with contextlib.suppress(ConnectionError):
                    await resp.write(f"data: {msg}\n\n".encode())
                return resp
            sent = resp is None
            if resp is None:
                resp = StreamResponse(upstream.status, self._out_headers(upstream, d, w))
                try:  # the first chunk with the head
                    await resp.prepare(request, chunk if strip is None else strip.feed(chunk))
                except ConnectionError:
                    st.error = "client_disconnect"
                    self.metrics.errors.labels(st.error).inc()
                    return resp
                if strip is None and not track:
                    upstream.relay(_Relay(resp, reader))  # from the next socket read on
            if not chunk:
                break
            if st.ttft is None and (not track or b'.delta"' in chunk):
                now = self.clock()
                st.ttft = now - d.sent_at
                self.router.first_token(d, now)
                self.holds.kick()
            reader.feed(chunk)
            if sent:
                continue
            try:
                await resp.write(chunk if strip is None else strip.feed(chunk))
            except ConnectionError:
                st.error = "client_disconnect"
                self.metrics.errors.labels(st.error).inc()
                return resp
        reader.close()
        if strip is not None:
            with contextlib.suppress(ConnectionError):
                await resp.write(strip.close())
        st.usage = reader.usage
        st.ok, st.error = True, None
        self.members.record_success(w)
        with contextlib.suppress(ConnectionError):
            await resp.write_eof()
        return resp
