"""A lean HTTP/1.1 client for the router's requests to its workers (engines).

The live router spends most of its per-request CPU in aiohttp's client. This module does
the one thing the router needs, on asyncio Protocols and ``httptools``' response parser
(llhttp): send a request on a pooled keep-alive connection and hand back the response,
its body whole or chunk by chunk.

Contract
--------
``Upstream(connect_timeout=..., total_timeout=..., max_idle_per_host=256)`` is one pool of
keep-alive connections per ``(host, port)``; it takes no loop when created, and must be
used from one event loop only. ``await upstream.request(method, url, path, body, headers)``
returns an :class:`UpstreamResponse` once the status line and headers are in.

- ``url`` is a worker's base URL, ``http://host[:port][/prefix]`` (port 80 by default; a
  prefix is put before ``path``). ``https``, user info, a query or a fragment, or no host
  raise ``ValueError``. ``path`` starts with ``/`` and may carry a query string.
- The request is written with one ``transport.write``: the request line, ``Host``,
  ``Content-Length`` (left out for a GET or HEAD without a body) and ``headers`` in the
  given order. ``Host``, ``Content-Length``, ``Transfer-Encoding`` and ``Connection``
  among ``headers`` are dropped (this module writes the first two; bodies are never
  chunked; HTTP/1.1 keeps connections alive by default). A CR or LF in the method, the
  path, a header name or value raises ``ValueError``. Headers are encoded as UTF-8 (with
  surrogateescape, the way aiohttp decodes them). No ``Accept-Encoding`` is sent and
  nothing is decompressed: the body comes back exactly as the worker sent it.
- Responses: ``Content-Length`` bodies, chunked bodies (de-chunked), bodies that end when
  the server closes the connection, and no body for HEAD, 1xx, 204 and 304. Interim 1xx
  responses (``100 Continue``, ``103 Early Hints``) are skipped; ``101`` (an upgrade) is
  an error. Header names and values are decoded as UTF-8 with surrogateescape.
- Body chunks are queued as they arrive: :meth:`UpstreamResponse.readany` returns
  everything queued so far (waiting for at least one byte), ``b""`` at the end; so an
  SSE stream passes through chunk by chunk. While more than 1 MiB is queued the
  connection stops reading from the socket (``pause_reading``), and it resumes when the
  queue is drained: a slow reader holds at most about 1 MiB plus one socket read.
  :meth:`UpstreamResponse.read` returns the whole body.
- Keep-alive: the connection goes back to the pool (most recently used first, at most
  ``max_idle_per_host`` idle ones per host; beyond that it is closed) when the response
  is released after its whole body arrived, without error, and neither side asked to
  close (``Connection: close``, HTTP/1.0 without keep-alive, a body that ended with the
  connection). Otherwise release closes it. Reading the body to its end (``read`` or
  ``readany`` returning ``b""``) releases the response; so does leaving
  ``async with response:``. A response garbage-collected without either closes its
  connection. Read a response from one task at a time.
- Stale connections: if a request on a *reused* connection fails before any byte of a
  response arrived (the server closed the idle connection, a reset on write), it is sent
  once more on a fresh connection, whatever the method (aiohttp does the same). Nothing is
  retried after a response byte arrived, nor after a failure on a fresh connection.
- Timeouts: ``connect_timeout`` bounds establishing a connection (TCP connect, and the
  name lookup when the host is not an address). ``total_timeout`` (or ``request(...,
  timeout=...)``) runs from the call to ``request`` until the whole body has *arrived*
  (not until the caller read it), the connect and a retry included; when it expires the
  connection is closed and the pending or next ``request``/``read``/``readany`` raises
  :class:`UpstreamTimeout`. Body bytes that arrived before it stay readable. (This is
  aiohttp's ``ClientTimeout(total=..., sock_connect=...)``.) Only the event loop's timers
  are used: one ``call_at`` handle per request.
- Errors: connection refused, reset, or closed before the full response; a malformed
  response (``httptools.HttpParserError``); the pool closed: all raise
  :class:`UpstreamError` with a message naming the worker. :class:`UpstreamTimeout` is an
  :class:`UpstreamError`. Cancelling a call (the router's client went away) closes the
  connection. ``ValueError`` is for the caller's own mistakes (above).
- No concurrency limit: every request without an idle connection opens a new one.
- ``await upstream.close()`` closes every connection, idle or in use (in-flight requests
  fail with :class:`UpstreamError`); later ``request`` calls raise :class:`UpstreamError`.

No global state: everything lives in the ``Upstream`` instance and its connections.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from types import TracebackType
from typing import cast
from urllib.parse import urlsplit

import httptools
from multidict import CIMultiDict, CIMultiDictProxy

__all__ = ["Upstream", "UpstreamError", "UpstreamResponse", "UpstreamTimeout"]

_HIGH_WATER = 1 << 20  # queued body bytes above which the connection stops reading
_DROPPED = frozenset({"host", "content-length", "transfer-encoding", "connection"})
_NO_BODY_METHODS = frozenset({"GET", "HEAD"})
_MAX_TARGETS = 4096  # parsed base URLs kept per Upstream


class UpstreamError(Exception):
    """The worker could not be reached, or did not send a complete, valid response."""


class UpstreamTimeout(UpstreamError):
    """The connect timeout or the total timeout expired."""


class _Stale(UpstreamError):
    """A reused connection failed before any response byte: safe to send again."""


class _Target:
    """A parsed base URL."""

    __slots__ = ("host", "host_header", "key", "port", "prefix", "url")

    def __init__(self, url: str) -> None:
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as e:
            raise ValueError(f"bad worker URL {url!r}: {e}") from None
        if parts.scheme != "http":
            raise ValueError(f"bad worker URL {url!r}: only http:// is supported")
        if not parts.hostname or parts.username is not None or parts.password is not None:
            raise ValueError(f"bad worker URL {url!r}: expected http://host[:port]")
        if parts.query or parts.fragment or "\r" in url or "\n" in url or " " in url:
            raise ValueError(f"bad worker URL {url!r}: no query, fragment or spaces allowed")
        self.url = url
        self.host = parts.hostname
        self.port = 80 if port is None else port
        self.key = (self.host, self.port)
        self.host_header = parts.netloc
        self.prefix = parts.path.rstrip("/")


class _Conn(asyncio.Protocol):
    """One keep-alive connection and the state of the response it is receiving."""

    def __init__(self, loop: asyncio.AbstractEventLoop, upstream: Upstream,
                 target: _Target) -> None:
        self._loop = loop
        self._upstream = upstream
        self.target = target
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reused = False  # set when it is taken from the pool
        self.idle: list[_Conn] | None = None  # the pool list holding it while idle
        # per response
        self._parser: httptools.HttpResponseParser | None = None
        self._head_only = False
        self._got_bytes = False
        self._raw: list[tuple[bytes, bytes]] = []
        self.status = 0
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self.headers_done = False
        self.done = False  # the whole body arrived
        self.keep_alive = False
        self._interim = False  # the message being parsed is a 1xx
        self.exc: UpstreamError | None = None
        self.chunks: list[bytes] = []
        self._size = 0
        self._paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None

    # --- asyncio.Protocol ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        parser = self._parser
        if parser is None:  # bytes nobody asked for: the connection is unusable
            self._close()
            return
        self._got_bytes = True
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(UpstreamError(f"worker {self.target.url} asked for a protocol "
                                     "upgrade, which is not supported"))
        except httptools.HttpParserError as e:
            self._fail(UpstreamError(f"worker {self.target.url} sent a malformed "
                                     f"response: {e}"))

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost finishes the response

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._upstream._conns.discard(self)
        if self.idle is not None:
            self.idle.remove(self)
            self.idle = None
        if self._parser is None or self.done or self.exc is not None:
            self._wake()
            return
        if (exc is None and self.headers_done and self._ends_with_close()):
            self.keep_alive = False
            self._finish()
            return
        what = f": {exc}" if exc is not None else ""
        if not self._got_bytes and self.reused:
            self._fail(_Stale(f"worker {self.target.url} closed a kept-alive "
                              f"connection{what}"))
        elif not self.headers_done:
            self._fail(UpstreamError(f"worker {self.target.url} closed the connection "
                                     f"before a complete response header{what}"))
        else:
            self._fail(UpstreamError(f"worker {self.target.url} closed the connection "
                                     f"in the middle of the response body{what}"))

    # --- httptools callbacks -----------------------------------------------------------
    def on_message_begin(self) -> None:
        if self.done:  # a second response to one request
            self.keep_alive = False
        self._raw = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self._raw.append((name, value))

    def on_headers_complete(self) -> None:
        assert self._parser is not None
        status = self._parser.get_status_code()
        if 100 <= status < 200:
            if status == 101:
                self._fail(UpstreamError(f"worker {self.target.url} switched protocols "
                                         "(HTTP 101), which is not supported"))
            else:
                self._interim = True
            return
        self.status = status
        self.raw_headers = self._raw
        self.headers_done = True
        if self._head_only:  # no body follows, whatever Content-Length says
            self.keep_alive = self._parser.should_keep_alive()
            self._parser = None  # anything more on this connection closes it
            self._finish()
        else:
            self._wake()

    def on_body(self, body: bytes) -> None:
        if self.done or self.exc is not None:
            return
        self.chunks.append(body)
        self._size += len(body)
        if self._size > _HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        if self.done or self.exc is not None:
            return
        assert self._parser is not None
        self.keep_alive = self._parser.should_keep_alive()  # before llhttp resets its flags
        self._finish()

    # --- internals ----------------------------------------------------------------------
    def _ends_with_close(self) -> bool:
        """Whether the body is delimited by the end of the connection."""
        headers = self.raw_headers
        for name, value in headers:
            lname = name.lower()
            if lname == b"content-length" or (lname == b"transfer-encoding"
                                              and b"chunked" in value.lower()):
                return False
        return True

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _finish(self) -> None:
        self.done = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._wake()

    def _fail(self, exc: UpstreamError) -> None:
        if self.exc is None and not self.done:
            self.exc = exc
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._close()
        self._wake()

    def _close(self) -> None:
        self.keep_alive = False
        if self.transport is not None and not self.closed:
            self.transport.close()

    def _on_timeout(self, timeout: float) -> None:
        self._timer = None
        self._fail(UpstreamTimeout(f"worker {self.target.url} did not answer in full "
                                   f"within {timeout:g} s"))

    async def _wait(self) -> None:
        waiter = self._loop.create_future()
        self._waiter = waiter
        try:
            await waiter
        finally:
            self._waiter = None

    def start(self, data: bytes, head_only: bool, deadline: float, timeout: float) -> None:
        """Reset the response state and send one request."""
        assert self.transport is not None
        self._parser = httptools.HttpResponseParser(self)
        self._head_only = head_only
        self._got_bytes = False
        self.status = 0
        self.raw_headers = []
        self.headers_done = self.done = self.keep_alive = self._interim = False
        self.exc = None
        self.chunks = []
        self._size = 0
        self._timer = self._loop.call_at(deadline, self._on_timeout, timeout)
        self.transport.write(data)

    async def wait_headers(self) -> None:
        try:
            while not self.headers_done:
                if self.exc is not None:
                    raise self.exc
                if self.closed:  # lost before we looked: connection_lost set exc
                    raise UpstreamError(f"worker {self.target.url} closed the connection")
                await self._wait()
        except BaseException:
            self._fail(UpstreamError("request abandoned"))
            raise

    def take(self) -> bytes:
        """Everything queued (maybe b""), resuming reading if it had paused."""
        chunks = self.chunks
        if not chunks:
            return b""
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self.chunks = []
        self._size = 0
        if self._paused:
            self._paused = False
            if self.transport is not None and not self.closed:
                self.transport.resume_reading()
        return data

    async def readany(self) -> bytes:
        try:
            while not self.chunks:
                if self.done:
                    return b""
                if self.exc is not None:
                    raise self.exc
                await self._wait()
        except asyncio.CancelledError:
            self._fail(UpstreamError("read cancelled"))
            raise
        return self.take()

    def reusable(self) -> bool:
        return (self.done and self.keep_alive and self.exc is None and not self.closed
                and self._waiter is None)


class UpstreamResponse:
    """A worker's response: status and headers at once, the body as it arrives."""

    __slots__ = ("_body", "_conn", "_headers", "_raw", "_upstream", "status")

    def __init__(self, upstream: Upstream, conn: _Conn) -> None:
        self._upstream = upstream
        self._conn: _Conn | None = conn
        self.status: int = conn.status
        self._raw = conn.raw_headers
        self._headers: CIMultiDictProxy[str] | None = None
        self._body: bytes | None = None

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        """The response headers, case-insensitive (a read-only ``CIMultiDict``)."""
        if self._headers is None:
            self._headers = CIMultiDictProxy(CIMultiDict([
                (k.decode("utf-8", "surrogateescape"), v.decode("utf-8", "surrogateescape"))
                for k, v in self._raw]))
        return self._headers

    @property
    def content(self) -> UpstreamResponse:
        """This response (aiohttp's ``response.content.readany()`` reads the same)."""
        return self

    async def read(self) -> bytes:
        """The whole body; the response is released at its end."""
        if self._body is not None:
            return self._body
        conn = self._conn
        if conn is None:
            raise UpstreamError("the response was released before its body was read")
        parts: list[bytes] = []
        while True:
            chunk = conn.take()
            if chunk:
                parts.append(chunk)
            elif conn.done:
                break
            else:
                chunk = await conn.readany()
                if not chunk:
                    break
                parts.append(chunk)
        self._body = parts[0] if len(parts) == 1 else b"".join(parts)
        self.release()
        return self._body

    async def text(self, encoding: str = "utf-8") -> str:
        """The whole body, decoded (undecodable bytes replaced)."""
        return (await self.read()).decode(encoding, "replace")

    async def readany(self) -> bytes:
        """The body bytes queued so far (waiting for at least one), ``b""`` at the end,
        where the response is released."""
        conn = self._conn
        if conn is None:
            if self._body is not None:
                return b""
            raise UpstreamError("the response was released before its body was read")
        data = await conn.readany()
        if not data:
            self.release()
        return data

    def release(self) -> None:
        """Give the connection back to the pool if the whole body arrived cleanly and the
        connection may stay alive; otherwise close it. Idempotent."""
        conn = self._conn
        if conn is None:
            return
        self._conn = None
        self._upstream._release(conn)

    def __del__(self) -> None:  # dropped without release: do not leak the connection
        conn = self._conn
        if conn is not None:
            self._conn = None
            with contextlib.suppress(RuntimeError):  # the event loop is already closed
                conn._close()

    async def __aenter__(self) -> UpstreamResponse:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


class Upstream:
    """Keep-alive connection pools to the workers, one per ``(host, port)``."""

    def __init__(self, *, connect_timeout: float, total_timeout: float,
                 max_idle_per_host: int = 256) -> None:
        if connect_timeout <= 0 or total_timeout <= 0 or max_idle_per_host < 0:
            raise ValueError("timeouts must be positive and max_idle_per_host >= 0")
        self.connect_timeout = connect_timeout
        self.total_timeout = total_timeout
        self.max_idle_per_host = max_idle_per_host
        self._targets: dict[str, _Target] = {}
        self._idle: dict[tuple[str, int], list[_Conn]] = {}
        self._conns: set[_Conn] = set()  # every open connection, idle or in use
        self._closed = False

    def _target(self, url: str) -> _Target:
        t = self._targets.get(url)
        if t is None:
            t = _Target(url)
            if len(self._targets) >= _MAX_TARGETS:
                self._targets.clear()
            self._targets[url] = t
        return t

    async def request(self, method: str, url: str, path: str, body: bytes = b"",
                      headers: Sequence[tuple[str, str]] = (), *,
                      timeout: float | None = None) -> UpstreamResponse:
        """Send ``method url+path`` with ``body`` and ``headers``; the response once its
        headers are in. ``timeout`` replaces ``total_timeout`` for this request."""
        if self._closed:
            raise UpstreamError("the upstream pool is closed")
        target = self._target(url)
        data = _encode(method, target, path, body, headers)
        head_only = method == "HEAD"
        loop = asyncio.get_running_loop()
        total = self.total_timeout if timeout is None else timeout
        deadline = loop.time() + total
        conn = self._pop_idle(target.key)
        if conn is not None:
            try:
                return await self._send(conn, data, head_only, deadline, total)
            except _Stale:
                pass
        conn = await self._connect(loop, target, deadline, total)
        try:
            return await self._send(conn, data, head_only, deadline, total)
        except _Stale as e:  # cannot happen on a fresh connection; be safe
            raise UpstreamError(str(e)) from None

    async def _send(self, conn: _Conn, data: bytes, head_only: bool, deadline: float,
                    total: float) -> UpstreamResponse:
        conn.start(data, head_only, deadline, total)
        await conn.wait_headers()
        return UpstreamResponse(self, conn)

    def _pop_idle(self, key: tuple[str, int]) -> _Conn | None:
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            conn.idle = None
            if not conn.closed and conn.transport is not None \
                    and not conn.transport.is_closing():
                conn.reused = True
                return conn
            conn._close()
        return None

    async def _connect(self, loop: asyncio.AbstractEventLoop, target: _Target,
                       deadline: float, total: float) -> _Conn:
        left = deadline - loop.time()
        limit = min(self.connect_timeout, left)
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(lambda: _Conn(loop, self, target),
                                       target.host, target.port),
                timeout=max(limit, 0.0))
        except asyncio.TimeoutError:
            which = ("connect", self.connect_timeout) if self.connect_timeout <= left \
                else ("total", total)
            raise UpstreamTimeout(f"cannot connect to worker {target.url}: the {which[0]} "
                                  f"timeout ({which[1]:g} s) expired") from None
        except OSError as e:
            raise UpstreamError(f"cannot connect to worker {target.url}: {e}") from None
        if self._closed:
            conn._close()
            raise UpstreamError("the upstream pool is closed")
        self._conns.add(conn)
        return conn

    def _release(self, conn: _Conn) -> None:
        if self._closed or not conn.reusable():
            conn._close()
            return
        conn._parser = None
        conn.chunks = []
        conn.raw_headers = []
        idle = self._idle.setdefault(conn.target.key, [])
        if len(idle) >= self.max_idle_per_host:
            conn._close()
            return
        conn.idle = idle
        idle.append(conn)

    @property
    def idle_connections(self) -> int:
        """How many connections wait in the pool (for tests and metrics)."""
        return sum(len(v) for v in self._idle.values())

    async def close(self) -> None:
        """Close every connection; the pool takes no more requests."""
        self._closed = True
        for idle in self._idle.values():
            for conn in idle:
                conn.idle = None
        self._idle.clear()
        for conn in list(self._conns):
            conn._fail(UpstreamError(f"worker {conn.target.url}: the upstream pool "
                                     "was closed"))
        self._conns.clear()
        await asyncio.sleep(0)  # let the transports run connection_lost


def _encode(method: str, target: _Target, path: str, body: bytes,
            headers: Sequence[tuple[str, str]]) -> bytes:
    """The request head and body, ready for one write."""
    if not path.startswith("/") or " " in path:
        raise ValueError(f"bad request path {path!r}")
    lines = [f"{method} {target.prefix}{path} HTTP/1.1\r\nHost: {target.host_header}\r\n"]
    if body or method not in _NO_BODY_METHODS:
        lines.append(f"Content-Length: {len(body)}\r\n")
    for name, value in headers:
        if name.lower() not in _DROPPED:
            lines.append(f"{name}: {value}\r\n")
    lines.append("\r\n")
    head = "".join(lines)
    n = len(lines) + 1  # a request line, a Host line, one line per item after it
    if head.count("\n") != n or head.count("\r") != n or " " in method:
        raise ValueError("CR, LF or a space in the method, path or a header")
    return head.encode("utf-8", "surrogateescape") + body if body else \
        head.encode("utf-8", "surrogateescape")
