"""One keep-alive connection of the router's HTTP/1.1 client to its workers
(:mod:`kvroute.server.upstream`, whose pool holds these), and what goes over it: the
request bytes out, the response parsed back with ``httptools``' response parser (llhttp).
Also the client's errors.

Contract
--------
- :class:`WorkerTarget`: a worker's base URL, ``http://host[:port][/prefix]`` (port 80 by
  default; a prefix is put before the request's path). ``https``, user info, a query or a
  fragment, or no host raise ``ValueError``.
- :func:`encode_request`: the request as one piece for one ``transport.write``: the
  request line, ``Host``, ``Content-Length`` (left out for a GET or HEAD without a body)
  and ``headers`` in the given order. ``path`` starts with ``/`` and may carry a query
  string. ``Host``, ``Content-Length``, ``Transfer-Encoding`` and ``Connection`` among
  ``headers`` are dropped (the first two are written here; bodies are never chunked;
  HTTP/1.1 keeps connections alive by default). A CR or LF in the method, the path, a
  header name or value raises ``ValueError``. Headers are encoded as UTF-8 (with
  surrogateescape, the way aiohttp decodes them). No ``Accept-Encoding`` is sent and
  nothing is decompressed: the body comes back exactly as the worker sent it.
- :class:`UpstreamConnection`: ``start(data, head_only, deadline, timeout)`` resets the
  response state, arms one ``call_at`` timer for ``deadline`` and writes ``data``.
  Responses: ``Content-Length`` bodies, chunked bodies (de-chunked), bodies that end when
  the server closes the connection, and no body for HEAD, 1xx, 204 and 304. Interim 1xx
  responses (``100 Continue``, ``103 Early Hints``) are skipped; ``101`` (an upgrade) is
  an error. ``status`` and ``raw_headers`` are set once ``wait_headers()`` returns.
- Body chunks are queued as they arrive: ``readany()`` returns everything queued
  (waiting for at least one byte), ``b""`` at the end; ``take()`` what is queued, without
  waiting. With a ``sink`` (:class:`Sink`; reset by ``start``), a chunk that arrives
  while nothing is queued is first offered to ``sink.take``, in the parser's callback:
  when it returns True it took the chunk, which is not queued and wakes nobody; when
  False, it is queued as usual (so the chunks keep their order). After each socket read
  ``sink.flush(end)`` is called, ``end`` True when the body ended in that read with
  nothing queued and no error (what was queued before had been taken). A sink must not
  raise. While more than 1 MiB
  is queued the connection stops reading from the socket (``pause_reading``) and
  resumes when the queue is taken: a slow reader holds at most about 1 MiB plus one
  socket read.
- Failures: a connection lost before the full response, a malformed response, the timer
  expiring (:class:`UpstreamTimeout`), or ``fail()``, close the connection and make the
  pending or next ``wait_headers``/``readany`` raise an :class:`UpstreamError` naming the
  worker; body bytes that arrived before stay readable. A *reused* connection (``reused``)
  lost before any response byte raises :class:`StaleConnection` instead: the request
  may be sent again. Cancelling ``wait_headers`` or ``readany`` closes the connection.
- ``reusable()``: the whole body arrived, without error, neither side asked to close
  (``Connection: close``, HTTP/1.0 without keep-alive, a body that ended with the
  connection), the connection is open and nobody waits on it.
- Errors: :class:`UpstreamError` (the worker could not be reached, or did not send a
  complete, valid response; the pool closed), :class:`UpstreamTimeout` (one of them).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol, cast
from urllib.parse import urlsplit

import httptools

__all__ = ["Sink", "StaleConnection", "UpstreamConnection", "UpstreamError", "UpstreamTimeout",
           "WorkerTarget", "encode_request"]

_HIGH_WATER = 1 << 20  # queued body bytes above which the connection stops reading
_DROPPED = frozenset({"host", "content-length", "transfer-encoding", "connection"})
_NO_BODY_METHODS = frozenset({"GET", "HEAD"})


class Sink(Protocol):
    """Where a response's body chunks go as they arrive (a proxy's pass-through)."""

    def take(self, chunk: bytes) -> bool:
        """Take ``chunk`` (True), or leave it to be queued (False)."""

    def flush(self, end: bool) -> None:
        """A socket read was parsed: pass on what was taken; ``end``: the body is over."""


class UpstreamError(Exception):
    """The worker could not be reached, or did not send a complete, valid response."""


class UpstreamTimeout(UpstreamError):
    """The connect timeout or the total timeout expired."""


class StaleConnection(UpstreamError):
    """A reused connection failed before any response byte: safe to send again."""


class WorkerTarget:
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



def encode_request(method: str, target: WorkerTarget, path: str, body: bytes,
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


class UpstreamConnection(asyncio.Protocol):
    """One keep-alive connection and the state of the response it is receiving."""

    def __init__(self, loop: asyncio.AbstractEventLoop, conns: set[UpstreamConnection],
                 target: WorkerTarget) -> None:
        self._loop = loop
        self._conns = conns  # the pool's open connections: this one leaves it when lost
        self.target = target
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reused = False  # set when it is taken from the pool
        self.idle: list[UpstreamConnection] | None = None  # the pool list holding it while idle
        # per response
        self.parser: httptools.HttpResponseParser | None = None
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
        self.sink: Sink | None = None
        self._size = 0
        self._paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None

    # --- asyncio.Protocol ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        parser = self.parser
        if parser is None:  # bytes nobody asked for: the connection is unusable
            self.close()
            return
        self._got_bytes = True
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.fail(UpstreamError(f"worker {self.target.url} asked for a protocol "
                                     "upgrade, which is not supported"))
        except httptools.HttpParserError as e:
            self.fail(UpstreamError(f"worker {self.target.url} sent a malformed "
                                     f"response: {e}"))
        sink = self.sink
        if sink is not None:
            sink.flush(self.done and self.exc is None and not self.chunks)

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost finishes the response

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._conns.discard(self)
        if self.idle is not None:
            self.idle.remove(self)
            self.idle = None
        if self.parser is None or self.done or self.exc is not None:
            self._wake()
            return
        if (exc is None and self.headers_done and self._ends_with_close()):
            self.keep_alive = False
            self._finish()
            return
        what = f": {exc}" if exc is not None else ""
        if not self._got_bytes and self.reused:
            self.fail(StaleConnection(f"worker {self.target.url} closed a kept-alive "
                              f"connection{what}"))
        elif not self.headers_done:
            self.fail(UpstreamError(f"worker {self.target.url} closed the connection "
                                     f"before a complete response header{what}"))
        else:
            self.fail(UpstreamError(f"worker {self.target.url} closed the connection "
                                     f"in the middle of the response body{what}"))

    # --- httptools callbacks -----------------------------------------------------------
    def on_message_begin(self) -> None:
        if self.done:  # a second response to one request
            self.keep_alive = False
        self._raw = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self._raw.append((name, value))

    def on_headers_complete(self) -> None:
        assert self.parser is not None
        status = self.parser.get_status_code()
        if 100 <= status < 200:
            if status == 101:
                self.fail(UpstreamError(f"worker {self.target.url} switched protocols "
                                         "(HTTP 101), which is not supported"))
            else:
                self._interim = True
            return
        self.status = status
        self.raw_headers = self._raw
        self.headers_done = True
        if self._head_only:  # no body follows, whatever Content-Length says
            self.keep_alive = self.parser.should_keep_alive()
            self.parser = None  # anything more on this connection closes it
            self._finish()
        else:
            self._wake()

    def on_body(self, body: bytes) -> None:
        if self.done or self.exc is not None:
            return
        sink = self.sink
        if sink is not None and not self.chunks and sink.take(body):
            return  # passed on as it came, without waking the reader
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
        assert self.parser is not None
        self.keep_alive = self.parser.should_keep_alive()  # before llhttp resets its flags
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

    def fail(self, exc: UpstreamError) -> None:
        if self.exc is None and not self.done:
            self.exc = exc
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.close()
        self._wake()

    def close(self) -> None:
        self.keep_alive = False
        if self.transport is not None and not self.closed:
            self.transport.close()

    def _on_timeout(self, timeout: float) -> None:
        self._timer = None
        self.fail(UpstreamTimeout(f"worker {self.target.url} did not answer in full "
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
        self.parser = httptools.HttpResponseParser(self)
        self._head_only = head_only
        self._got_bytes = False
        self.status = 0
        self.raw_headers = []
        self.headers_done = self.done = self.keep_alive = self._interim = False
        self.exc = None
        self.chunks = []
        self.sink = None
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
            self.fail(UpstreamError("request abandoned"))
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
            self.fail(UpstreamError("read cancelled"))
            raise
        return self.take()

    def reusable(self) -> bool:
        return (self.done and self.keep_alive and self.exc is None and not self.closed
                and self._waiter is None)
