"""A lean HTTP/1.1 client for the router's requests to its workers (engines).

The live router spent most of its per-request CPU in aiohttp's client. This client does
the one thing the router needs, on asyncio Protocols and ``httptools``' response parser
(llhttp): send a request on a pooled keep-alive connection and hand back the response,
its body whole or chunk by chunk. This module is its pool and its responses; one
connection, the request bytes and the response parsing are
:mod:`kvroute.server.upstream_connection`'s.

Contract
--------
``Upstream(connect_timeout=..., total_timeout=..., max_idle_per_host=256)`` is one pool of
keep-alive connections per ``(host, port)``; it takes no loop when created, and must be
used from one event loop only. ``await upstream.request(method, url, path, body, headers)``
returns an :class:`UpstreamResponse` once the status line and headers are in.

- ``url`` is a worker's base URL, ``http://host[:port][/prefix]``
  (:class:`~kvroute.server.upstream_connection.WorkerTarget`; others raise
  ``ValueError``). The request goes out in one ``transport.write``, as
  :func:`~kvroute.server.upstream_connection.encode_request` writes it (``ValueError`` for
  a CR or LF in it); the response is parsed as
  :class:`~kvroute.server.upstream_connection.UpstreamConnection` says. Header names and
  values are decoded as UTF-8 with surrogateescape; the body comes back exactly as the
  worker sent it.
- Body: :meth:`UpstreamResponse.readany` returns everything queued so far (waiting for at
  least one byte), ``b""`` at the end; so an SSE stream passes through chunk by chunk,
  and a slow reader holds at most about 1 MiB plus one socket read.
  :meth:`UpstreamResponse.read` returns the whole body. :meth:`UpstreamResponse.relay`
  hands the chunks to a sink as they arrive instead (a proxy's pass-through, with no
  task woken per chunk); what it declines is queued for ``readany``.
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
  :class:`UpstreamError`; both are defined in :mod:`kvroute.server.upstream_connection`
  and exported here. Cancelling a call (the router's client went away) closes the
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

from multidict import CIMultiDict, CIMultiDictProxy

from kvroute.server.http_messages import first_header
from kvroute.server.upstream_connection import (
    Sink,
    StaleConnection,
    UpstreamConnection,
    UpstreamError,
    UpstreamTimeout,
    WorkerTarget,
    encode_request,
)

__all__ = ["Sink", "Upstream", "UpstreamError", "UpstreamResponse", "UpstreamTimeout"]

_MAX_TARGETS = 4096  # parsed base URLs kept per Upstream


class UpstreamResponse:
    """A worker's response: status and headers at once, the body as it arrives."""

    __slots__ = ("_body", "_conn", "_headers", "_raw", "_upstream", "status")

    def __init__(self, upstream: Upstream, conn: UpstreamConnection) -> None:
        self._upstream = upstream
        self._conn: UpstreamConnection | None = conn
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

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), without building
        :attr:`headers`."""
        return first_header(self._raw, name)

    def header_items(self) -> list[tuple[str, str]]:
        """Every header as ``(name, value)``, in order (what :attr:`headers` holds)."""
        return [(k.decode("utf-8", "surrogateescape"), v.decode("utf-8", "surrogateescape"))
                for k, v in self._raw]

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

    def relay(self, sink: Sink | None) -> None:
        """Offer each body chunk that arrives from now on, while nothing is queued, to
        ``sink`` (in the connection's protocol callback; see
        :class:`~kvroute.server.upstream_connection.Sink`) before queueing it: a chunk it
        takes is never returned by ``readany``, which then waits for the end of the body
        (or an error) past it; None stops. A sink must not raise."""
        if self._conn is not None:
            self._conn.sink = sink

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
                conn.close()

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
        self._targets: dict[str, WorkerTarget] = {}
        self._idle: dict[tuple[str, int], list[UpstreamConnection]] = {}
        self._conns: set[UpstreamConnection] = set()  # every open connection, idle or in use
        self._closed = False

    def _target(self, url: str) -> WorkerTarget:
        t = self._targets.get(url)
        if t is None:
            t = WorkerTarget(url)
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
        data = encode_request(method, target, path, body, headers)
        head_only = method == "HEAD"
        loop = asyncio.get_running_loop()
        total = self.total_timeout if timeout is None else timeout
        deadline = loop.time() + total
        conn = self._pop_idle(target.key)
        if conn is not None:
            try:
                return await self._send(conn, data, head_only, deadline, total)
            except StaleConnection:
                pass
        conn = await self._connect(loop, target, deadline, total)
        try:
            return await self._send(conn, data, head_only, deadline, total)
        except StaleConnection as e:  # cannot happen on a fresh connection; be safe
            raise UpstreamError(str(e)) from None

    async def _send(self, conn: UpstreamConnection, data: bytes, head_only: bool, deadline: float,
                    total: float) -> UpstreamResponse:
        conn.start(data, head_only, deadline, total)
        await conn.wait_headers()
        return UpstreamResponse(self, conn)

    def _pop_idle(self, key: tuple[str, int]) -> UpstreamConnection | None:
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            conn.idle = None
            if not conn.closed and conn.transport is not None \
                    and not conn.transport.is_closing():
                conn.reused = True
                return conn
            conn.close()
        return None

    async def _connect(self, loop: asyncio.AbstractEventLoop, target: WorkerTarget,
                       deadline: float, total: float) -> UpstreamConnection:
        left = deadline - loop.time()
        limit = min(self.connect_timeout, left)
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(lambda: UpstreamConnection(loop, self._conns, target),
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
            conn.close()
            raise UpstreamError("the upstream pool is closed")
        self._conns.add(conn)
        return conn

    def _release(self, conn: UpstreamConnection) -> None:
        conn.sink = None
        if self._closed or not conn.reusable():
            conn.close()
            return
        conn.parser = None
        conn.chunks = []
        conn.raw_headers = []
        idle = self._idle.setdefault(conn.target.key, [])
        if len(idle) >= self.max_idle_per_host:
            conn.close()
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
            conn.fail(UpstreamError(f"worker {conn.target.url}: the upstream pool "
                                     "was closed"))
        self._conns.clear()
        await asyncio.sleep(0)  # let the transports run connection_lost
