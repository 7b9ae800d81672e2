"""The request and response types of the router's HTTP/1.1 server
(:mod:`kvroute.server.http_server`): what a handler gets and what it returns.
:mod:`kvroute.server.http_connection` builds the requests and writes the responses.

Contract
--------
- :class:`Request`: one request, its body already read whole (:attr:`Request.body`,
  de-chunked). :attr:`Request.path` is percent-decoded, :attr:`Request.headers`
  case-insensitive (decoded as UTF-8 with surrogateescape, like aiohttp's; built on first
  use; :meth:`Request.header` reads one header without building them),
  :attr:`Request.query` parsed from :attr:`Request.query_string` (on first use).
  :attr:`Request.version` is ``"1.0"`` or ``"1.1"``; :attr:`Request.transport` the
  client's connection (``is_closing()`` once the client went away); :meth:`Request.json`
  the body parsed (``ValueError`` when it is not JSON).
- :class:`Response`: a whole response (status, headers, body); it goes out in one write
  with ``Content-Length``. :func:`json_response` is one with a JSON body
  (``application/json; charset=utf-8``); :func:`error_response` one with the shared error
  body, :func:`kvroute.protocol.response_body.error_body`
  (``{"error": {"message", "type", "code"}}``, ``code`` the status).
- :class:`StreamResponse`: :meth:`StreamResponse.prepare` sends the status line and
  headers (and, if given, the first chunk in the same write), then each
  :meth:`~StreamResponse.write` goes out as one chunk
  (``Transfer-Encoding: chunked``; to an HTTP/1.0 client unframed, and the connection
  closes at the end) and waits while the transport's buffer is over its high-water mark
  (``pause_writing``). :meth:`~StreamResponse.write_nowait` sends a chunk (and, with
  ``eof``, the end) at once whatever the buffer holds, False when the connection is
  closed; :meth:`~StreamResponse.writable` says whether the buffer is under its mark.
  Writing to a lost connection raises ``ConnectionResetError``;
  ``write()`` before ``prepare()`` or after ``write_eof()`` raises ``RuntimeError``. A
  stream the handler did not prepare or finish is prepared and finished after it returns.
- :data:`Handler`: ``async (Request) -> Response | StreamResponse``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from multidict import CIMultiDict, CIMultiDictProxy, MultiDict, MultiDictProxy

from kvroute.protocol.response_body import error_body

if TYPE_CHECKING:
    from kvroute.server.http_connection import HttpConnection

__all__ = ["Handler", "Request", "Response", "StreamResponse", "error_response",
           "first_header", "json_response"]


def first_header(raw: Sequence[tuple[bytes, bytes]], name: str) -> str | None:
    """The first value of header ``name`` (case-insensitive) among raw ``(name, value)``
    pairs, decoded as UTF-8 with surrogateescape; None when absent."""
    key = name.lower().encode("utf-8", "surrogateescape")
    for k, v in raw:
        if k.lower() == key:
            return v.decode("utf-8", "surrogateescape")
    return None


class Request:
    """One request, its body already read."""

    __slots__ = ("_conn", "_headers", "_query", "body", "keep_alive", "method", "path",
                 "query_string", "raw_headers", "transport", "version")

    def __init__(self, conn: HttpConnection, method: str, path: str, query_string: str,
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

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), as :attr:`headers` has
        it, without building :attr:`headers`."""
        return first_header(self.raw_headers, name)

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
    """The router's JSON error: :func:`~kvroute.protocol.response_body.error_body`, the
    shape every kvroute server writes."""
    return json_response(error_body(message, kind, status), status, headers)


class StreamResponse:
    """A response whose body is written piece by piece (chunked)."""

    def __init__(self, status: int = 200, headers: Mapping[str, str] | None = None) -> None:
        self.status = status
        self.headers: dict[str, str] = dict(headers) if headers else {}
        self.prepared = self.finished = False
        self._conn: HttpConnection | None = None
        self._chunked = True

    async def prepare(self, request: Request, body: bytes = b"") -> None:
        """Send the status line and headers, and ``body`` (if any) as the first chunk, in
        one write."""
        if self.prepared:
            return
        conn = self._conn = request._conn
        self._chunked = request.version != "1.0"
        if not self._chunked:
            conn.reading_done = True  # the end of the body is the end of the connection
        head = conn.head(self.status, self.headers, None if self._chunked else -1)
        self.prepared = True
        conn.send(head + self._frame(body) if body else head)
        await conn.drain()

    def _frame(self, data: bytes) -> bytes:
        return b"%x\r\n%b\r\n" % (len(data), data) if self._chunked else data

    async def write(self, data: bytes) -> None:
        """Send ``data`` as one chunk; wait while the transport's buffer is full."""
        conn = self._conn
        if conn is None or self.finished:
            raise RuntimeError("write() before prepare() or after write_eof()")
        if not data:
            return
        conn.send(self._frame(data))
        await conn.drain()

    def writable(self) -> bool:
        """Whether a write would go out without waiting: prepared, not finished, and the
        connection open with its buffer under the high-water mark."""
        conn = self._conn
        return conn is not None and not self.finished and conn.writable()

    def write_nowait(self, data: bytes, eof: bool = False) -> bool:
        """Send ``data`` (if any) as one chunk now, and with ``eof`` the end of the body in
        the same write, whatever the buffer holds (a caller that cares checks
        :meth:`writable` first); False, with nothing sent, when the response is not
        prepared, is finished or its connection is closed."""
        conn = self._conn
        if conn is None or self.finished or not conn.is_open():
            return False
        out = self._frame(data) if data else b""
        if eof:
            self.finished = True
            if self._chunked:
                out += b"0\r\n\r\n"
        if out:
            conn.send(out)
        return True

    async def write_eof(self) -> None:
        """End the body."""
        if self.finished or self._conn is None:
            return
        self.finished = True
        if self._chunked:
            self._conn.send(b"0\r\n\r\n")


Handler = Callable[[Request], Awaitable[Response | StreamResponse]]
