"""One client connection of the router's HTTP/1.1 server (:mod:`kvroute.server.http_server`):
an asyncio Protocol that parses requests with ``httptools``' request parser (llhttp) and
answers them, in order, with the server's handler.

Contract
--------
- Requests: HTTP/1.0 and 1.1. The body (``Content-Length`` or chunked, de-chunked) is read
  whole before the handler runs (a :class:`~kvroute.server.http_messages.Request`).
  ``Expect: 100-continue`` is answered ``HTTP/1.1 100 Continue`` when the request is next
  in line (not when its ``Content-Length`` is over the limit).
- Keep-alive: an HTTP/1.1 connection stays open unless the request says
  ``Connection: close``; HTTP/1.0 connections always close after the response.
  Pipelined requests are handled one at a time and answered in order; while 8 wait, the
  connection stops reading.
- Errors, each a JSON error response
  (:func:`~kvroute.server.http_messages.error_response`) after which the connection
  closes (the requests before it on the connection are answered first; the connection
  half-closes and discards what the client still sends for a second): a body over
  ``max_body`` gets 413 (before the body is read when ``Content-Length`` says so); a
  request line and headers over ``max_head`` bytes get 431; malformed HTTP (llhttp's
  verdict) gets 400. A handler's exception is logged and answered 500; nothing is ever
  sent as a traceback. A request with ``Upgrade`` is answered as a plain request and the
  connection closes after it.
- Disconnects: if the connection is lost while a handler runs, the handler's task is
  cancelled (aiohttp's ``handler_cancellation=True``). An end of file from the client
  counts as a disconnect (half-closed connections are not kept).
- Response heads (:meth:`HttpConnection.head`): given ``Content-Length``,
  ``Transfer-Encoding`` and ``Connection`` headers are replaced by the connection's own;
  ``Date`` (the server's, formatted once a second), ``Server: kvroute`` and (to a
  non-empty whole body or an unframed stream) ``Content-Type: application/octet-stream``
  are added unless given; ``Connection: close`` when the connection closes after the
  response. A CR or LF in a header is a ``ValueError`` (a
  :class:`~kvroute.server.http_messages.Response` with one is logged and answered 500).
  A HEAD request gets the head only.
- Writes (:meth:`HttpConnection.send`, :meth:`HttpConnection.drain`): to a lost
  connection they raise ``ConnectionResetError``; ``drain`` waits while the transport's
  buffer is over its high-water mark (``pause_writing``).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Mapping
from http import HTTPStatus
from typing import TYPE_CHECKING, cast
from urllib.parse import unquote

import httptools

from kvroute.server.http_messages import Request, Response, StreamResponse, error_response

if TYPE_CHECKING:
    from kvroute.server.http_server import HttpServer

__all__ = ["HttpConnection"]

log = logging.getLogger("kvroute.server.http")  # the server's logger, as it has always been

_REASONS = {int(s): s.phrase for s in HTTPStatus}
_OWN = frozenset({"content-length", "transfer-encoding", "connection"})
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_MAX_QUEUED = 8  # pipelined requests waiting before a connection stops reading


class _Reject(Exception):
    """Raised in a parser callback: answer ``response`` (if any) and stop reading."""

    def __init__(self, response: Response | None) -> None:
        self.response = response


class HttpConnection(asyncio.Protocol):
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

    def is_open(self) -> bool:
        """Whether :meth:`send` would not raise: the connection is open."""
        transport = self.transport
        return not (self.lost or transport is None or transport.is_closing())

    def writable(self) -> bool:
        """Whether :meth:`send` may go on without waiting: the connection is open and
        writing is not paused (its buffer is under the high-water mark)."""
        return not self._write_paused and self.is_open()

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
