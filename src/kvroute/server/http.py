"""A lean HTTP/1.1 server for the router, on asyncio Protocols and ``httptools``' request
parser (llhttp): aiohttp's server side took about a third of the router's CPU.

Contract
--------
``HttpServer(handler, *, max_body=256 MiB, max_head=64 KiB, keepalive_timeout=75.0)``
answers every request with ``await handler(request)``, which returns a :class:`Response`
or a :class:`StreamResponse` (prepared or not, finished or not). ``await
server.start(host, port)`` listens (port 0: any free one; :attr:`HttpServer.port` says
which); create and use it inside one running event loop.

- Requests: HTTP/1.0 and 1.1. The body (``Content-Length`` or chunked, de-chunked) is read
  whole before the handler runs: :attr:`Request.body`. ``Expect: 100-continue`` is
  answered ``HTTP/1.1 100 Continue`` when the request is next in line (not when its
  ``Content-Length`` is over the limit). :attr:`Request.path` is percent-decoded,
  :attr:`Request.headers` case-insensitive (decoded as UTF-8 with surrogateescape, like
  aiohttp's), :attr:`Request.query` parsed from the query string.
- Keep-alive: an HTTP/1.1 connection stays open unless the request says
  ``Connection: close``; HTTP/1.0 connections always close after the response.
  Pipelined requests are handled one at a time and answered in order; while 8 wait, the
  connection stops reading.
- Errors, each a JSON ``{"error": {"message", "type", "code"}}`` response after which the
  connection closes (the requests before it on the connection are answered first): a body
  over ``max_body`` gets 413 (before the body is read when ``Content-Length`` says so);
  a request line and headers over ``max_head`` bytes get 431; malformed HTTP (llhttp's
  verdict) gets 400. A handler's exception is logged and answered 500; nothing is ever
  sent as a traceback.
- Disconnects: if the connection is lost while a handler runs, the handler's task is
  cancelled (aiohttp's ``handler_cancellation=True``). An end of file from the client
  counts as a disconnect (half-closed connections are not kept).
- Responses: a :class:`Response` goes out in one write with ``Content-Length``. A
  :class:`StreamResponse` sends its head on :meth:`StreamResponse.prepare`, then each
  :meth:`~StreamResponse.write` as one chunk (``Transfer-Encoding: chunked``; to an
  HTTP/1.0 client, unframed, and the connection closes at the end), and waits while the
  transport's buffer is over its high-water mark (``pause_writing``); writing to a lost
  connection raises ``ConnectionResetError``. A stream the handler did not finish is
  finished after it returns. Given ``Content-Length``, ``Transfer-Encoding`` and
  ``Connection`` headers are replaced by the server's own; ``Date`` (formatted once a
  second) and ``Server: kvroute`` are added unless given; ``Connection: close`` when the
  connection closes after the response. A HEAD request gets the head only.
- Idle connections: one with no request in hand and no byte received for
  ``keepalive_timeout`` seconds is closed (checked about every second).
- ``close()`` stops listening. ``await shutdown(timeout)`` closes the listener and every
  idle connection, lets the handlers running finish for up to ``timeout`` seconds (their
  responses say ``Connection: close``), then cancels what is left and closes every
  connection.

Not supported: TLS, HTTP/2, protocol upgrades (a request with ``Upgrade`` is answered as
a plain request and the connection closes after it), streamed request bodies, response
trailers, compression.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, cast
from urllib.parse import parse_qsl, unquote

import httptools
from multidict import CIMultiDict, CIMultiDictProxy, MultiDict, MultiDictProxy

__all__ = ["HttpServer", "Request", "Response", "StreamResponse", "error_response",
           "json_response"]

log = logging.getLogger("kvroute.server.http")

_REASONS = {int(s): s.phrase for s in HTTPStatus}
_OWN = frozenset({"content-length", "transfer-encoding", "connection"})
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_MAX_QUEUED = 8  # pipelined requests waiting before a connection stops reading


class Request:
    """One request, its body already read."""

    __slots__ = ("_conn", "_headers", "_query", "body", "keep_alive", "method", "path",
                 "query_string", "raw_headers", "transport", "version")

    def __init__(self, conn: _Conn, method: str, path: str, query_string: str,
                 version: str, raw_headers: list[tuple[bytes, bytes]]) -> None:
        self._conn = conn
        self.transport: asyncio.Transport | None = conn.transport
        self.method = method
        self.path = path
        self.query_string = query_string
        self.version = version  # "1.0" or "1.1"
        self.raw_headers = raw_headers
        self.body = b""
        self.keep_alive = False
        self._headers: CIMultiDictProxy[str] | None = None
        self._query: MultiDictProxy[str] | None = None

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        if self._headers is None:
            self._headers = CIMultiDictProxy(CIMultiDict([
                (k.decode("utf-8", "surrogateescape"), v.decode("utf-8", "surrogateescape"))
                for k, v in self.raw_headers]))
        return self._headers

    @property
    def query(self) -> MultiDictProxy[str]:
        if self._query is None:
            self._query = MultiDictProxy(MultiDict(parse_qsl(self.query_string,
                                                             keep_blank_values=True)))
        return self._query

    def json(self) -> Any:
        """The body parsed as JSON (``ValueError`` when it is not)."""
        return json.loads(self.body)


class Response:
    """A whole response: status, headers and body."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, body: bytes = b"", status: int = 200,
                 headers: Mapping[str, str] | None = None,
                 content_type: str | None = None) -> None:
        self.body = body
        self.status = status
        self.headers: dict[str, str] = dict(headers) if headers else {}
        if content_type is not None:
            self.headers["Content-Type"] = content_type


def json_response(obj: Any, status: int = 200,
                  headers: Mapping[str, str] | None = None) -> Response:
    return Response(json.dumps(obj).encode(), status, headers,
                    "application/json; charset=utf-8")


def error_response(status: int, message: str, kind: str,
                   headers: Mapping[str, str] | None = None) -> Response:
    """The router's JSON error: ``{"error": {"message", "type", "code"}}``."""
    return json_response({"error": {"message": message, "type": kind, "code": status}},
                         status, headers)


class StreamResponse:
    """A response whose body is written piece by piece (chunked)."""

    def __init__(self, status: int = 200, headers: Mapping[str, str] | None = None) -> None:
        self.status = status
        self.headers: dict[str, str] = dict(headers) if headers else {}
        self.prepared = self.finished = False
        self._conn: _Conn | None = None
        self._chunked = True

    async def prepare(self, request: Request) -> None:
        """Send the status line and headers."""
        if self.prepared:
            return
        conn = self._conn = request._conn
        self._chunked = request.version != "1.0"
        if not self._chunked:
            conn.reading_done = True  # the end of the body is the end of the connection
        head = conn.head(self.status, self.headers, None if self._chunked else -1)
        self.prepared = True
        conn.send(head)
        await conn.drain()

    async def write(self, data: bytes) -> None:
        """Send ``data`` as one chunk; wait while the transport's buffer is full."""
        conn = self._conn
        if conn is None or self.finished:
            raise RuntimeError("write() before prepare() or after write_eof()")
        if not data:
            return
        conn.send(b"%x\r\n%b\r\n" % (len(data), data) if self._chunked else data)
        await conn.drain()

    async def write_eof(self) -> None:
        """End the body."""
        if self.finished or self._conn is None:
            return
        self.finished = True
        if self._chunked:
            self._conn.send(b"0\r\n\r\n")


Handler = Callable[[Request], Awaitable[Response | StreamResponse]]


class _Reject(Exception):
    """Raised in a parser callback: answer ``response`` (if any) and stop reading."""

    def __init__(self, response: Response | None) -> None:
        self.response = response


class _Conn(asyncio.Protocol):
    """One client connection: parses requests, runs the handler on them in order."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.loop = server.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.queue: deque[Request | Response] = deque()
        self.task: asyncio.Task[None] | None = None
        self.last = self.loop.time()  # the last byte received or response finished
        self.lost = False
        self.reading_done = False  # close once the queue is answered
        self._read_paused = False
        self._write_paused = False
        self._drain: asyncio.Future[None] | None = None
        self._want_continue = False
        self._linger = False
        # the request being parsed
        self._req: Request | None = None
        self._url = b""
        self._raw: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._size = 0
        self._in_head = False
        self._head = 0  # bytes of the head seen by the callbacks
        self._head_raw = 0  # bytes of the reads after the one the head began in

    # --- asyncio.Protocol ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.server.conns.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.server.conns.discard(self)
        if self.task is not None:
            self.task.cancel()
        self._wake(ConnectionResetError("the client closed the connection"))

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake(None)

    def data_received(self, data: bytes) -> None:
        if self.reading_done:
            return
        self.last = self.loop.time()
        was_in_head = self._in_head
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._stop(None)
        except httptools.HttpParserCallbackError as e:
            if isinstance(e.__context__, _Reject):
                self._stop(e.__context__.response)
            else:
                log.error("HTTP parser callback failed", exc_info=e.__context__)
                self._stop(error_response(500, "internal server error", "internal_error"))
        except httptools.HttpParserError as e:
            if self.reading_done:  # bytes after a request that closes the connection
                self._stop(None)
            else:
                self._stop(error_response(400, f"malformed HTTP request: {e}",
                                          "invalid_request_error"))
        if self._in_head and was_in_head and not self.reading_done:
            self._head_raw += len(data)  # this whole read was part of the head
            if self._head_raw > self.server.max_head:
                self._stop(self._too_long())

    # --- httptools callbacks -------------------------------------------------------------
    def on_message_begin(self) -> None:
        if self.reading_done:  # a request after one that closes the connection
            raise _Reject(None)
        self._in_head = True
        self._head = self._head_raw = 0
        self._url = b""
        self._raw = []

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._raw.append((name, value))
        self._head += len(name) + len(value) + 4
        if self._head > self.server.max_head:
            raise _Reject(self._too_long())

    def on_headers_complete(self) -> None:
        self._in_head = False
        parser = self.parser
        try:
            url = httptools.parse_url(self._url)
        except httptools.HttpParserInvalidURLError:
            raise _Reject(error_response(400, "malformed request target",
                                         "invalid_request_error")) from None
        path = url.path.decode("utf-8", "surrogateescape") if url.path else "/"
        if "%" in path:
            path = unquote(path, errors="surrogateescape")
        query = url.query.decode("utf-8", "surrogateescape") if url.query else ""
        version = parser.get_http_version()
        for name, value in self._raw:
            lname = name.lower()
            if lname == b"content-length" and value.strip().isdigit() \
                    and int(value) > self.server.max_body:
                raise _Reject(self._too_large())
            if lname == b"expect" and value.lower() == b"100-continue" and version == "1.1":
                if self.task is None and not self.queue:
                    self.transport.write(_CONTINUE)  # type: ignore[union-attr]
                else:
                    self._want_continue = True
        self._req = Request(self, parser.get_method().decode("ascii", "replace"), path, query,
                            version, self._raw)
        self._body = []
        self._size = 0

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > self.server.max_body:
            raise _Reject(self._too_large())
        self._body.append(body)

    def on_message_complete(self) -> None:
        req = self._req
        if req is None:
            return
        self._req = None
        self._want_continue = False
        body = self._body
        req.body = body[0] if len(body) == 1 else b"".join(body)
        self._body = []
        req.keep_alive = req.version == "1.1" and self.parser.should_keep_alive()
        if not req.keep_alive:
            self.reading_done = True  # nothing after this request is read
        self._enqueue(req)

    # --- internals -----------------------------------------------------------------------
    def _too_long(self) -> Response:
        return error_response(431, f"the request line and headers exceed "
                              f"{self.server.max_head} bytes", "invalid_request_error")

    def _too_large(self) -> Response:
        return error_response(413, f"the request body exceeds {self.server.max_body} bytes",
                              "invalid_request_error")

    def _stop(self, response: Response | None) -> None:
        """Read nothing more; answer ``response`` after the requests before it, then close."""
        self.reading_done = True
        self._req = None
        self._body = []
        if response is not None:
            self._linger = True
            self._enqueue(response)
        elif self.task is None:
            self._close()

    def _close(self) -> None:
        """Close; after an error response, half-close first and discard what the client
        still sends for a second, so that it reads the response rather than a reset."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self._linger and transport.can_write_eof():
            transport.write_eof()
            self.loop.call_later(1.0, transport.close)
        else:
            transport.close()

    def _enqueue(self, item: Request | Response) -> None:
        if self.task is None:
            self.task = self.loop.create_task(self._run(item))
            return
        self.queue.append(item)
        if len(self.queue) >= _MAX_QUEUED and not self._read_paused \
                and self.transport is not None:
            self._read_paused = True
            self.transport.pause_reading()

    def _wake(self, exc: Exception | None) -> None:
        waiter = self._drain
        if waiter is not None and not waiter.done():
            if exc is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(exc)

    def send(self, data: bytes) -> None:
        if self.lost or self.transport is None or self.transport.is_closing():
            raise ConnectionResetError("the client closed the connection")
        self.transport.write(data)

    async def drain(self) -> None:
        """Wait while the transport's write buffer is over its high-water mark."""
        while self._write_paused:
            if self.lost:
                raise ConnectionResetError("the client closed the connection")
            self._drain = self.loop.create_future()
            try:
                await self._drain
            finally:
                self._drain = None

    def closes_after(self) -> bool:
        """Whether the connection closes after the response being written."""
        return self.server.closing or (self.reading_done and not self.queue)

    def head(self, status: int, headers: Mapping[str, str], length: int | None) -> bytes:
        """A response head: ``length`` None is chunked, -1 unframed (ends with a close)."""
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n"]
        seen_date = seen_server = seen_type = False
        for name, value in headers.items():
            lname = name.lower()
            if lname in _OWN:
                continue
            if lname == "date":
                seen_date = True
            elif lname == "server":
                seen_server = True
            elif lname == "content-type":
                seen_type = True
            lines.append(f"{name}: {value}\r\n")
        if not seen_type and length:
            lines.append("Content-Type: application/octet-stream\r\n")
        if not seen_date:
            lines.append(self.server.date())
        if not seen_server:
            lines.append("Server: kvroute\r\n")
        if length is None:
            lines.append("Transfer-Encoding: chunked\r\n")
        elif length >= 0:
            lines.append(f"Content-Length: {length}\r\n")
        if length == -1 or self.closes_after():
            lines.append("Connection: close\r\n")
        lines.append("\r\n")
        text = "".join(lines)
        if text.count("\n") != len(lines) or text.count("\r") != len(lines):
            raise ValueError("CR or LF in a response header")
        return text.encode("utf-8", "surrogateescape")

    def _write(self, resp: Response, method: str) -> None:
        body = resp.body
        try:
            head = self.head(resp.status, resp.headers, len(body))
        except ValueError:
            log.exception("bad response header")
            body = error_response(500, "internal server error", "internal_error").body
            head = self.head(500, {"Content-Type": "application/json"}, len(body))
        self.send(head if method == "HEAD" or not body else head + body)

    async def _respond(self, req: Request) -> None:
        try:
            resp = await self.server.handler(req)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            if isinstance(e, ConnectionError) and self.lost:
                raise
            log.exception("unhandled error on %s %s", req.method, req.path)
            resp = error_response(500, "internal server error", "internal_error")
        if isinstance(resp, StreamResponse):
            if not resp.prepared:
                await resp.prepare(req)
            await resp.write_eof()
        else:
            self._write(resp, req.method)

    async def _run(self, item: Request | Response) -> None:
        """Answer ``item``, then whatever queued behind it; close when told to."""
        while True:
            try:
                if isinstance(item, Request):
                    await self._respond(item)
                else:
                    self._write(item, "GET")
            except ConnectionError:
                self.task = None
                self._close()
                return
            except Exception:  # a bad response (a CR in a header, a misused stream)
                log.exception("cannot answer %s", getattr(item, "path", "a request"))
                self.task = None
                if self.transport is not None:
                    self.transport.close()
                return
            if not self.queue:
                break
            item = self.queue.popleft()
            if self._read_paused and len(self.queue) < _MAX_QUEUED // 2 and not self.lost:
                self._read_paused = False
                assert self.transport is not None
                self.transport.resume_reading()
        self.task = None
        self.last = self.loop.time()
        if self.transport is None or self.lost:
            return
        if self.closes_after():
            self._close()
        elif self._want_continue:
            self._want_continue = False
            self.transport.write(_CONTINUE)


class HttpServer:
    """Listens on one address and serves :class:`Request`\\ s with ``handler``."""

    def __init__(self, handler: Handler, *, max_body: int = 256 << 20,
                 max_head: int = 64 << 10, keepalive_timeout: float = 75.0) -> None:
        self.handler = handler
        self.max_body = max_body
        self.max_head = max_head
        self.keepalive_timeout = keepalive_timeout
        self.conns: set[_Conn] = set()
        self.closing = False
        self.loop = asyncio.get_running_loop()
        self._server: asyncio.AbstractServer | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._date_at = 0
        self._date = ""
        self.port = 0  # the port it listens on, once started

    async def start(self, host: str, port: int) -> None:
        """Listen on ``host:port`` (``OSError`` when that is impossible)."""
        server = await self.loop.create_server(lambda: _Conn(self), host, port)
        self._server = server  # asyncio's Server, or uvloop's with the same API
        self.port = int(server.sockets[0].getsockname()[1])
        self._sweep_later()


    def date(self) -> str:
        now = int(time.time())
        if now != self._date_at:
            self._date_at = now
            self._date = f"Date: {formatdate(now, usegmt=True)}\r\n"
        return self._date

    def _sweep_later(self) -> None:
        self._sweeper = self.loop.call_later(min(1.0, self.keepalive_timeout / 4), self._sweep)

    def _sweep(self) -> None:
        limit = self.loop.time() - self.keepalive_timeout
        for conn in list(self.conns):
            if conn.task is None and conn.last < limit and conn.transport is not None:
                conn.transport.close()
        self._sweep_later()

    def close(self) -> None:
        """Stop listening (the connections stay)."""
        if self._server is not None:
            self._server.close()

    async def shutdown(self, timeout: float) -> None:
        """Stop listening, close idle connections, give running handlers ``timeout``
        seconds, then cancel them and close every connection."""
        self.close()
        self.closing = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        deadline = self.loop.time() + timeout
        while True:
            for conn in list(self.conns):
                if conn.task is None and conn.transport is not None:
                    conn.transport.close()
            tasks = [c.task for c in self.conns if c.task is not None and not c.task.done()]
            left = deadline - self.loop.time()
            if not tasks or left <= 0:
                break
            await asyncio.wait(tasks, timeout=left)
        for conn in list(self.conns):
            if conn.task is not None:
                conn.task.cancel()
            if conn.transport is not None:
                conn.transport.close()
        await asyncio.sleep(0)  # let the transports run connection_lost
