"""The router's own HTTP/1.1 server, on asyncio Protocols and ``httptools``' request
parser (llhttp): aiohttp's server side took about a third of the router's CPU.

Contract
--------
``HttpServer(handler, *, max_body=256 MiB, max_head=64 KiB, keepalive_timeout=75.0)``
answers every request with ``await handler(request)``, which returns a
:class:`~kvroute.server.http_messages.Response` or a
:class:`~kvroute.server.http_messages.StreamResponse` (prepared or not, finished or not).
``await server.start(host, port)`` listens (port 0: any free one; :attr:`HttpServer.port`
says which); create and use it inside one running event loop.

- The request and response types, and how a response is framed:
  :mod:`kvroute.server.http_messages`. How a connection reads, pipelines, refuses
  (413, 431, 400, 500) and answers requests, keep-alive and client disconnects:
  :mod:`kvroute.server.http_connection`, one
  :class:`~kvroute.server.http_connection.HttpConnection` per accepted connection.
- ``Date`` headers are formatted once a second (:meth:`HttpServer.date`).
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
import time
from email.utils import formatdate

from kvroute.server.http_connection import HttpConnection
from kvroute.server.http_messages import Handler

__all__ = ["HttpServer"]


class HttpServer:
    """Listens on one address and serves :class:`Request`\\ s with ``handler``."""

    def __init__(self, handler: Handler, *, max_body: int = 256 << 20,
                 max_head: int = 64 << 10, keepalive_timeout: float = 75.0) -> None:
        self.handler = handler
        self.max_body = max_body
        self.max_head = max_head
        self.keepalive_timeout = keepalive_timeout
        self.conns: set[HttpConnection] = set()
        self.closing = False
        self.loop = asyncio.get_running_loop()
        self._server: asyncio.AbstractServer | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._date_at = 0
        self._date = ""
        self.port = 0  # the port it listens on, once started

    async def start(self, host: str, port: int) -> None:
        """Listen on ``host:port`` (``OSError`` when that is impossible)."""
        server = await self.loop.create_server(lambda: HttpConnection(self), host, port)
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
