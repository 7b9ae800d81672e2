"""kvroute.server.upstream (the router's HTTP/1.1 client) on real sockets, against small
aiohttp servers and raw asyncio servers that misbehave on purpose."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
import pytest_asyncio
from aiohttp import web

from kvroute.server.upstream import Upstream, UpstreamError, UpstreamResponse, UpstreamTimeout

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Worker:
    """An aiohttp engine stand-in that records which connections it served."""

    def __init__(self) -> None:
        self.peers: list[object] = []
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> Worker:
        app = web.Application(client_max_size=64 << 20)
        app.router.add_post("/echo", self.echo)
        app.router.add_get("/json", self.json)
        app.router.add_get("/stream", self.stream)
        app.router.add_get("/close", self.close)
        app.router.add_get("/empty", self.empty)
        app.router.add_get("/big", self.big)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    def _seen(self, request: web.Request) -> None:
        assert request.transport is not None
        self.peers.append(request.transport.get_extra_info("peername"))

    async def echo(self, request: web.Request) -> web.Response:
        self._seen(request)
        body = await request.read()
        return web.Response(body=body, headers={"X-Got-Type": request.headers.get(
            "Content-Type", ""), "X-Got-Host": request.host})

    async def json(self, request: web.Request) -> web.Response:
        self._seen(request)
        return web.json_response({"ok": True, "q": request.query_string})

    async def stream(self, request: web.Request) -> web.StreamResponse:
        self._seen(request)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        with contextlib.suppress(ConnectionError):  # the client may go away (on purpose)
            for i in range(4):
                await resp.write(f"data: {i}\n\n".encode())
                await asyncio.sleep(0.05)
            await resp.write_eof()
        return resp

    async def close(self, request: web.Request) -> web.Response:
        self._seen(request)
        return web.Response(text="bye", headers={"Connection": "close"})

    async def empty(self, request: web.Request) -> web.Response:
        self._seen(request)
        return web.Response(status=204)

    async def big(self, request: web.Request) -> web.StreamResponse:
        self._seen(request)
        resp = web.StreamResponse()
        resp.content_length = 8 << 20
        await resp.prepare(request)
        for _ in range(8):
            await resp.write(b"x" * (1 << 20))
        await resp.write_eof()
        return resp


@pytest_asyncio.fixture
async def worker() -> AsyncIterator[Worker]:
    w = await Worker().start()
    yield w
    await w.stop()


@pytest_asyncio.fixture
async def up() -> AsyncIterator[Upstream]:
    u = Upstream(connect_timeout=2.0, total_timeout=5.0)
    yield u
    await u.close()


@asynccontextmanager
async def raw_server(handler: Handler) -> AsyncIterator[tuple[str, list[int]]]:
    """A raw asyncio server; yields its URL and a list that counts its connections."""
    writers: list[asyncio.StreamWriter] = []
    count: list[int] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        count.append(1)
        # a handler still running when the test ends is cancelled: end quietly
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError,
                                 asyncio.CancelledError):
            await handler(reader, writer)

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", count
    finally:
        server.close()
        for w in writers:
            w.close()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(server.wait_closed(), 1.0)


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """One request (its head and Content-Length body) off the wire."""
    head = await reader.readuntil(b"\r\n\r\n")
    n = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            n = int(line.split(b":", 1)[1])
    return head + (await reader.readexactly(n) if n else b"")


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


# --- the normal cases ------------------------------------------------------------------
@pytest.mark.asyncio
async def test_content_length_response_and_request_head(worker: Worker, up: Upstream) -> None:
    r = await up.request("POST", worker.url, "/echo", b'{"a": 1}',
                         [("Content-Type", "application/json"), ("Host", "ignored"),
                          ("Content-Length", "999")])
    assert r.status == 200
    assert r.headers["content-length"] == "8"
    assert r.headers["X-Got-Type"] == "application/json"
    assert r.headers["X-Got-Host"] == worker.url.removeprefix("http://")
    assert await r.read() == b'{"a": 1}'
    assert await r.read() == b'{"a": 1}'  # cached
    r = await up.request("GET", worker.url, "/json?x=1", b"", ())
    assert await r.text() == '{"ok": true, "q": "x=1"}'


@pytest.mark.asyncio
async def test_chunked_stream_arrives_chunk_by_chunk(worker: Worker, up: Upstream) -> None:
    async with await up.request("GET", worker.url, "/stream") as r:
        assert r.status == 200
        assert r.headers["Transfer-Encoding"] == "chunked"
        assert "text/event-stream" in r.headers["Content-Type"]
        chunks = []
        while chunk := await r.content.readany():
            chunks.append(chunk)
    assert chunks == [f"data: {i}\n\n".encode() for i in range(4)]
    assert up.idle_connections == 1


class TakeTwo:
    """A sink that takes two chunks, then declines."""

    def __init__(self) -> None:
        self.taken: list[bytes] = []
        self.flushed: list[tuple[int, bool]] = []  # (chunks taken so far, end)

    def take(self, chunk: bytes) -> bool:
        if len(self.taken) >= 2:
            return False
        self.taken.append(chunk)
        return True

    def flush(self, end: bool) -> None:
        self.flushed.append((len(self.taken), end))


@pytest.mark.asyncio
async def test_relay_takes_chunks_until_it_declines(worker: Worker, up: Upstream) -> None:
    """A sink gets the chunks as they arrive while it takes them, and a flush after each
    read; the first chunk it declines, and what follows, are queued for readany, in
    order; the connection is pooled after."""
    sink = TakeTwo()
    async with await up.request("GET", worker.url, "/stream") as r:
        read = [await r.content.readany()]
        r.relay(sink)
        while chunk := await r.content.readany():
            read.append(chunk)
    assert sink.taken == [b"data: 1\n\n", b"data: 2\n\n"]
    assert read == [b"data: 0\n\n", b"data: 3\n\n"]
    assert (1, False) in sink.flushed and (2, False) in sink.flushed
    assert up.idle_connections == 1


@pytest.mark.asyncio
async def test_relay_sees_the_end_when_it_took_everything(worker: Worker,
                                                          up: Upstream) -> None:
    """A sink that took every chunk is flushed with end=True; readany then says b""."""
    sink = TakeTwo()
    sink.taken.append(b"")  # room for one more chunk only: the stream sends 3 after the first
    async with await up.request("GET", worker.url, "/stream") as r:
        await r.content.readany()
        await r.content.readany()  # chunk 1, before the sink is set
        r.relay(sink)
        rest = await r.content.readany()
        assert rest == b"data: 3\n\n"  # declined: the sink is full after chunk 2
    assert sink.taken == [b"", b"data: 2\n\n"] and not any(e for _, e in sink.flushed)
    everything = TakeTwo()
    everything.take = lambda chunk: True  # type: ignore[method-assign]
    async with await up.request("GET", worker.url, "/stream") as r:
        await r.content.readany()
        r.relay(everything)
        assert await r.content.readany() == b""
    assert everything.flushed[-1][1] is True
    assert up.idle_connections == 1


@pytest.mark.asyncio
async def test_keep_alive_reuses_one_connection(worker: Worker, up: Upstream) -> None:
    for _ in range(3):
        async with await up.request("POST", worker.url, "/echo", b"hi") as r:
            assert await r.read() == b"hi"
    r = await up.request("GET", worker.url, "/stream")
    assert len(await r.read()) == 4 * len(b"data: 0\n\n")
    assert len(worker.peers) == 4 and len(set(worker.peers)) == 1
    assert up.idle_connections == 1


@pytest.mark.asyncio
async def test_connection_close_response_is_not_pooled(worker: Worker, up: Upstream) -> None:
    r = await up.request("GET", worker.url, "/close")
    assert await r.read() == b"bye"
    assert up.idle_connections == 0
    r = await up.request("GET", worker.url, "/json")
    assert r.status == 200
    await r.read()
    assert len(set(worker.peers)) == 2


@pytest.mark.asyncio
async def test_no_body_statuses_and_head(worker: Worker, up: Upstream) -> None:
    r = await up.request("GET", worker.url, "/empty")
    assert r.status == 204 and await r.read() == b""
    r = await up.request("HEAD", worker.url, "/json")  # Content-Length but no body
    assert r.status == 200 and int(r.headers["Content-Length"]) > 0
    assert await r.read() == b""
    r = await up.request("GET", worker.url, "/json")
    assert (await r.read()).startswith(b'{"ok"')
    assert len(set(worker.peers)) == 1


@pytest.mark.asyncio
async def test_large_body_round_trips(worker: Worker, up: Upstream) -> None:
    body = bytes(range(256)) * (8 << 12)  # 8 MiB
    r = await up.request("POST", worker.url, "/echo", body, [("Content-Type", "x/y")])
    assert await r.read() == body


@pytest.mark.asyncio
async def test_concurrent_requests(worker: Worker, up: Upstream) -> None:
    async def one(i: int) -> bytes:
        async with await up.request("POST", worker.url, "/echo", f"req {i}".encode()) as r:
            return await r.read()

    got = await asyncio.gather(*(one(i) for i in range(64)))
    assert got == [f"req {i}".encode() for i in range(64)]
    assert 1 <= up.idle_connections <= 64
    got = await asyncio.gather(*(one(i) for i in range(64)))  # the pool serves them again
    assert got == [f"req {i}".encode() for i in range(64)]
    assert len(set(worker.peers)) == up.idle_connections


@pytest.mark.asyncio
async def test_slow_reader_pauses_the_socket(worker: Worker, up: Upstream) -> None:
    r = await up.request("GET", worker.url, "/big")
    await asyncio.sleep(0.3)  # the server could send all 8 MiB by now
    conn = r._conn
    assert conn is not None and conn._paused
    assert conn._size < (1 << 20) + (1 << 20)  # the high-water mark and one socket read
    total = 0
    while chunk := await r.readany():
        total += len(chunk)
    assert total == 8 << 20
    assert up.idle_connections == 1


# --- stale pooled connections ---------------------------------------------------------------
@pytest.mark.asyncio
async def test_idle_connection_closed_by_server_is_skipped(up: Upstream) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(OK)
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.close()  # an idle keep-alive timeout

    async with raw_server(handler) as (url, conns):
        assert await (await up.request("GET", url, "/")).read() == b"ok"
        assert up.idle_connections == 1
        await asyncio.sleep(0.2)
        assert up.idle_connections == 0  # connection_lost took it out of the pool
        assert await (await up.request("GET", url, "/")).read() == b"ok"
        assert len(conns) == 2


@pytest.mark.asyncio
async def test_reused_connection_closed_on_request_is_retried_once(up: Upstream) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(OK)
        await writer.drain()
        await read_request(reader)  # the race: the server closes as a request arrives
        writer.close()

    async with raw_server(handler) as (url, conns):
        assert await (await up.request("GET", url, "/")).read() == b"ok"
        assert await (await up.request("POST", url, "/", b"x")).read() == b"ok"
        assert len(conns) == 2


@pytest.mark.asyncio
async def test_no_retry_once_response_bytes_arrived(up: Upstream) -> None:
    requests: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        requests.append(await read_request(reader))
        writer.write(OK)
        await writer.drain()
        requests.append(await read_request(reader))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-")
        await writer.drain()
        writer.close()

    async with raw_server(handler) as (url, conns):
        assert await (await up.request("GET", url, "/")).read() == b"ok"
        with pytest.raises(UpstreamError, match="before a complete response header"):
            await up.request("GET", url, "/")
        assert len(requests) == 2 and len(conns) == 1


# --- failures ----------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_connection_refused(up: Upstream) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(UpstreamError, match="cannot connect"):
        await up.request("GET", f"http://127.0.0.1:{port}", "/health")


@pytest.mark.asyncio
@pytest.mark.parametrize("reply", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
])
async def test_server_stops_mid_body(up: Upstream, reply: bytes) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(reply)
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.close()

    async with raw_server(handler) as (url, _):
        r = await up.request("POST", url, "/v1/completions", b"{}")
        assert r.status == 200
        first = await r.readany()
        assert first in (b"0123456789", b"hello")
        with pytest.raises(UpstreamError, match="middle of the response body"):
            await r.readany()
        r.release()
        assert up.idle_connections == 0


@pytest.mark.asyncio
async def test_server_never_answers(up: Upstream) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(10)

    async with raw_server(handler) as (url, _):
        t0 = time.monotonic()
        with pytest.raises(UpstreamTimeout):
            await up.request("POST", url, "/", b"{}", timeout=0.3)
        assert 0.25 < time.monotonic() - t0 < 1.0


@pytest.mark.asyncio
async def test_total_timeout_covers_the_body() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n01234")
        await asyncio.sleep(10)

    u = Upstream(connect_timeout=1.0, total_timeout=0.3)
    async with raw_server(handler) as (url, _):
        r = await u.request("GET", url, "/")
        t0 = time.monotonic()
        with pytest.raises(UpstreamTimeout):
            await r.read()
        assert time.monotonic() - t0 < 1.0
    await u.close()


@pytest.mark.asyncio
@pytest.mark.parametrize("reply", [
    b"garbage\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
])
async def test_malformed_response(up: Upstream, reply: bytes) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(reply)
        await asyncio.sleep(1)

    async with raw_server(handler) as (url, _):
        with pytest.raises(UpstreamError):
            r = await up.request("GET", url, "/")
            await r.read()
        assert up.idle_connections == 0


@pytest.mark.asyncio
async def test_body_until_close_interim_response_and_http10(up: Upstream) -> None:
    replies = [b"HTTP/1.1 200 OK\r\n\r\nuntil the end",
               b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + OK,
               b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"]

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while replies:
            await read_request(reader)
            writer.write(replies.pop(0))
            await writer.drain()
            if len(replies) == 2:  # the body ended with the connection
                writer.close()
                return
        await reader.read()

    async with raw_server(handler) as (url, _):
        assert await (await up.request("GET", url, "/")).read() == b"until the end"
        r = await up.request("GET", url, "/")
        assert r.status == 200 and "Link" not in r.headers
        assert await r.read() == b"ok"
        assert up.idle_connections == 1
        r = await up.request("GET", url, "/")  # the pooled connection, then HTTP/1.0
        assert await r.read() == b"ok"
        assert up.idle_connections == 0


@pytest.mark.asyncio
async def test_bad_arguments(up: Upstream) -> None:
    for url in ("https://127.0.0.1:1", "127.0.0.1:1", "http://", "http://u@h:1",
                "http://h:99999", "http://h:1/?q"):
        with pytest.raises(ValueError):
            await up.request("GET", url, "/")
    for path, headers in (("/a b", ()), ("x", ()), ("/", [("X", "a\r\nEvil: 1")]),
                          ("/", [("X\n", "a")])):
        with pytest.raises(ValueError):
            await up.request("GET", "http://127.0.0.1:1", path, b"", headers)


@pytest.mark.asyncio
async def test_close_fails_in_flight_and_later_requests(worker: Worker) -> None:
    u = Upstream(connect_timeout=1.0, total_timeout=5.0)
    await (await u.request("GET", worker.url, "/json")).read()
    r = await u.request("GET", worker.url, "/stream")
    await u.close()
    with pytest.raises(UpstreamError):
        while await r.readany():
            pass
    assert u.idle_connections == 0
    with pytest.raises(UpstreamError, match="closed"):
        await u.request("GET", worker.url, "/json")


@pytest.mark.asyncio
async def test_cancelled_read_closes_the_connection(worker: Worker, up: Upstream) -> None:
    r = await up.request("GET", worker.url, "/stream")
    await r.readany()
    task = asyncio.create_task(r.read())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    r.release()
    assert up.idle_connections == 0
    assert await (await up.request("GET", worker.url, "/json")).read()


@pytest.mark.asyncio
async def test_dropped_response_closes_its_connection(worker: Worker, up: Upstream) -> None:
    r = await up.request("GET", worker.url, "/stream")
    conn = r._conn
    assert conn is not None
    del r
    await asyncio.sleep(0.01)
    assert conn.closed and up.idle_connections == 0


def test_under_uvloop() -> None:
    uvloop = pytest.importorskip("uvloop")

    async def scenario() -> None:
        w = await Worker().start()
        u = Upstream(connect_timeout=1.0, total_timeout=5.0)
        try:
            resps: list[UpstreamResponse] = []
            for i in range(3):
                resps.append(await u.request("POST", w.url, "/echo", str(i).encode()))
                assert await resps[-1].read() == str(i).encode()
            r = await u.request("GET", w.url, "/stream")
            parts = [c async for c in _chunks(r)]
            assert parts == [f"data: {i}\n\n".encode() for i in range(4)]
            assert await (await u.request("GET", w.url, "/big")).read() == b"x" * (8 << 20)
            assert len(set(w.peers)) == 1
        finally:
            await u.close()
            await w.stop()

    loop = uvloop.new_event_loop()
    try:
        loop.run_until_complete(scenario())
    finally:
        loop.close()


async def _chunks(r: UpstreamResponse) -> AsyncIterator[bytes]:
    while chunk := await r.readany():
        yield chunk
