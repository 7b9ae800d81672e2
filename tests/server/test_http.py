"""The lean HTTP/1.1 server (kvroute.server.http_server, http_connection, http_messages)
on real sockets: raw ones where the bytes matter, aiohttp's client where they do not."""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvroute.server.http_messages import (
    Handler,
    Request,
    Response,
    StreamResponse,
    error_response,
)
from kvroute.server.http_server import HttpServer

BIG_CHUNK = 256 * 1024


class App:
    """Handlers by path: echo (default), /sleep?s=, /boom, /stream?n=, /server."""

    def __init__(self) -> None:
        self.transports: set[int] = set()
        self.cancelled: list[bool] = []  # transport.is_closing() when cancelled
        self.started = asyncio.Event()
        self.written = 0

    async def __call__(self, req: Request) -> Response | StreamResponse:
        self.transports.add(id(req.transport))
        if req.path == "/sleep":
            self.started.set()
            try:
                await asyncio.sleep(float(req.query["s"]))
            except asyncio.CancelledError:
                assert req.transport is not None
                self.cancelled.append(req.transport.is_closing())
                raise
        elif req.path == "/boom":
            raise RuntimeError("boom")
        elif req.path == "/stream":
            resp = StreamResponse(headers={"Content-Type": "application/octet-stream"})
            await resp.prepare(req)
            for k in range(int(req.query["n"])):
                await resp.write(bytes([65 + k % 26]) * BIG_CHUNK)
                self.written += 1
            return resp  # the server finishes it
        elif req.path == "/inject":
            return Response(b"x", headers={"X-A": "a\r\nInjected: 1"})
        elif req.path == "/server":
            return Response(b"x", headers={"Server": "upstream/1.0"})
        return Response(req.body, headers={"X-Path": req.path, "X-Query": req.query_string,
                                           "X-Method": req.method,
                                           "X-Session": req.headers.get("x-session", "")})


@asynccontextmanager
async def serving(handler: Handler | None = None,
                  **kw: Any) -> AsyncIterator[tuple[HttpServer, App]]:
    app = App()
    server = HttpServer(handler or app, **kw)
    await server.start("127.0.0.1", 0)
    try:
        yield server, app
    finally:
        await server.shutdown(1.0)


async def connect(server: HttpServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", server.port)


async def response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One response: status, headers (lower-case names), the body (de-chunked)."""
    status_line = await asyncio.wait_for(reader.readline(), 5)
    assert status_line.startswith(b"HTTP/1.1 "), status_line
    headers: dict[str, str] = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        parts = []
        while (size := int((await reader.readline()).strip(), 16)):
            parts.append(await reader.readexactly(size))
            assert await reader.readexactly(2) == b"\r\n"
        assert await reader.readexactly(2) == b"\r\n"
        body = b"".join(parts)
    else:
        body = await reader.read()
    return int(status_line.split()[1]), headers, body


async def closed(reader: asyncio.StreamReader) -> bool:
    """Whether the server closed the connection (nothing more to read)."""
    try:
        return await asyncio.wait_for(reader.read(), 5) == b""
    except ConnectionResetError:
        return True


def req(method: str, path: str, body: bytes = b"", *extra: str, version: str = "1.1") -> bytes:
    head = [f"{method} {path} HTTP/{version}", "Host: t", *extra]
    if body:
        head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


@pytest.mark.asyncio
async def test_keep_alive_many_requests_on_one_connection() -> None:
    async with serving() as (server, app):
        reader, writer = await connect(server)
        for k in range(100):
            writer.write(req("POST", f"/e?k={k}", f"body {k}".encode()))
            status, headers, body = await response(reader)
            assert (status, body, headers["x-query"]) == (200, f"body {k}".encode(), f"k={k}")
            assert "connection" not in headers
        writer.close()
        conn = aiohttp.TCPConnector(limit=1)
        async with aiohttp.ClientSession(connector=conn) as http:
            for k in range(20):
                async with http.get(f"http://127.0.0.1:{server.port}/x%20y?q={k}",
                                    headers={"X-Session": "s1"}) as r:
                    assert r.status == 200 and r.headers["X-Path"] == "/x y"
                    assert r.headers["X-Session"] == "s1"
        assert len(app.transports) == 2


@pytest.mark.asyncio
@pytest.mark.parametrize("extra", [("GET", "1.0"), ("Connection: close", "1.1")])
async def test_http10_and_connection_close_close_after_the_response(extra: Any) -> None:
    header, version = extra
    async with serving() as (server, _):
        reader, writer = await connect(server)
        head = [] if header == "GET" else [header]
        # a second request after the closing one is never answered
        writer.write(req("POST", "/a", b"one", *head, version=version) + req("GET", "/b"))
        status, headers, body = await response(reader)
        assert (status, body, headers["connection"]) == (200, b"one", "close")
        assert await closed(reader)


@pytest.mark.asyncio
async def test_pipelined_requests_are_answered_in_order() -> None:
    async with serving() as (server, _):
        reader, writer = await connect(server)
        writer.write(req("GET", "/sleep?s=0.1") + req("POST", "/two", b"2")
                     + req("GET", "/sleep?s=0") + req("POST", "/four", b"4"))
        paths = [(await response(reader))[1]["x-path"] for _ in range(4)]
        assert paths == ["/sleep", "/two", "/sleep", "/four"]


def chunked(body: bytes, sizes: list[int]) -> bytes:
    """``body`` in chunked transfer encoding, cut into pieces of the given sizes."""
    out, pos = [], 0
    for n in [*sizes, len(body)]:
        piece = body[pos:pos + max(n, 1)]
        if piece:
            out.append(b"%x\r\n%b\r\n" % (len(piece), piece))
        pos += len(piece)
    return b"".join(out) + b"0\r\n\r\n"


_REQUEST = st.tuples(
    st.sampled_from(["GET", "POST", "DELETE"]),
    st.sampled_from(["/", "/a", "/v1/completions", "/p%20q"]),
    st.sampled_from(["", "?x=1", "?url=http%3A%2F%2Fw&y="]),
    st.binary(max_size=3000),
    st.none() | st.lists(st.integers(1, 700), max_size=4),  # chunk sizes, or Content-Length
    st.sampled_from(["", "s-1", "\u00e9"]),  # an X-Session header value
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests=st.lists(_REQUEST, min_size=1, max_size=5),
       cuts=st.lists(st.integers(1, 400), max_size=8))
def test_pipelined_requests_cut_anywhere_are_parsed_whole(
        requests: list[tuple[str, str, str, bytes, list[int] | None, str]],
        cuts: list[int]) -> None:
    """Any requests, pipelined on one connection and cut at any bytes across reads, are
    each seen whole (method, path, query, body, headers) and answered in order."""
    wire = []
    for method, path, query, body, sizes, session in requests:
        head = f"{method} {path}{query} HTTP/1.1\r\nHost: t\r\n"
        if session:
            head += f"X-Session: {session}\r\n"
        if sizes is None:
            data = (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body
        else:
            data = (head + "Transfer-Encoding: chunked\r\n\r\n").encode() + \
                chunked(body, sizes)
        wire.append(data)
    raw = b"".join(wire)

    async def run() -> None:
        async with serving() as (server, _):
            reader, writer = await connect(server)
            pos = 0
            for n in cuts:  # separate reads on the server's side
                writer.write(raw[pos:pos + n])
                await writer.drain()
                await asyncio.sleep(0.002)
                pos += n
            writer.write(raw[pos:])
            for method, path, query, body, _, session in requests:
                status, headers, got = await response(reader)
                assert status == 200
                assert headers["x-method"] == method and got == body
                assert headers["x-path"] == path.replace("%20", " ")
                assert headers["x-query"] == query.lstrip("?")
                assert headers["x-session"] == session
            writer.close()

    asyncio.run(run())


_STARTS = [b"GET / HTTP/1.1\r\n", b"POST /x HTTP/1.1\r\nContent-Length: ",
           b"GET /\x00 HTTP/1.1\r\n", b"G\r\n"]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(junk=st.binary(min_size=1, max_size=300)
       | st.builds(bytes.__add__, st.sampled_from(_STARTS), st.binary(max_size=100)))
def test_garbage_gets_an_error_or_a_close_and_the_server_goes_on(junk: bytes) -> None:
    """Whatever bytes arrive, the connection gets a JSON error or is closed or waits for
    more; the server keeps answering other connections."""

    async def run() -> None:
        async with serving() as (server, _):
            reader, writer = await connect(server)
            writer.write(junk)
            writer.write_eof()
            try:
                data = await asyncio.wait_for(reader.read(), 5)
            except ConnectionResetError:
                data = b""
            if data:
                assert data.startswith(b"HTTP/1.1 ")
                status = int(data.split()[1])
                assert status < 500, data
                if status >= 400:
                    assert json.loads(data.split(b"\r\n\r\n", 1)[1])["error"]["code"] == status
            reader, writer = await connect(server)
            writer.write(req("POST", "/after", b"ok"))
            status, _, body = await response(reader)
            assert status == 200 and body == b"ok"
            writer.close()

    asyncio.run(run())


@pytest.mark.asyncio
async def test_content_length_and_chunked_request_bodies() -> None:
    async with serving() as (server, _):
        reader, writer = await connect(server)
        writer.write(b"POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        assert (await response(reader))[2] == b"hello world"
        writer.write(req("POST", "/l", b"x" * 100_000))
        assert (await response(reader))[2] == b"x" * 100_000

        async def gen() -> AsyncIterator[bytes]:
            for k in range(5):
                yield f"part{k};".encode()

        async with aiohttp.ClientSession() as http, \
                http.post(f"http://127.0.0.1:{server.port}/g", data=gen()) as r:
            assert await r.read() == b"part0;part1;part2;part3;part4;"


@pytest.mark.asyncio
async def test_expect_100_continue() -> None:
    async with serving(max_body=10_000) as (server, _):
        reader, writer = await connect(server)
        body = b"y" * 2000
        writer.write(b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 2000\r\n"
                     b"Expect: 100-continue\r\n\r\n")
        assert await asyncio.wait_for(reader.readexactly(25), 5) == \
            b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(body)
        assert (await response(reader))[2] == body
        # over the limit: 413 at once, no 100 Continue, and the connection closes
        writer.write(b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 20000\r\n"
                     b"Expect: 100-continue\r\n\r\n")
        status, _, err = await response(reader)
        assert status == 413 and json.loads(err)["error"]["code"] == 413
        assert await closed(reader)


@pytest.mark.asyncio
@pytest.mark.parametrize("chunked", [False, True])
async def test_body_over_the_limit_is_413_json_and_closes(chunked: bool) -> None:
    async with serving(max_body=1000) as (server, _):
        reader, writer = await connect(server)
        writer.write(req("POST", "/ok", b"z" * 1000))
        assert (await response(reader))[0] == 200
        if chunked:
            writer.write(b"POST /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                         + b"200\r\n" + b"z" * 512 + b"\r\n" + b"200\r\n" + b"z" * 512 + b"\r\n")
        else:
            writer.write(req("POST", "/x", b"z" * 1001))
        status, headers, body = await response(reader)
        assert status == 413 and headers["connection"] == "close"
        assert headers["content-type"].startswith("application/json")
        error = json.loads(body)["error"]
        assert error["type"] == "invalid_request_error" and "1000" in error["message"]
        assert await closed(reader)


@pytest.mark.asyncio
async def test_oversized_head_and_malformed_http_get_an_error_and_close(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with serving(max_head=4096) as (server, _):
        for data, want in ((req("GET", "/", b"", "X-Big: " + "a" * 5000), 431),
                           (b"GARBAGE\r\n\r\n", 400),
                           (b"GET / HTTP/1.1\r\nContent-Length: nope\r\n\r\n", 400),
                           (b"GET / HTTP/1.1\r\nHost: t\r\n" + b"X-A: b\r\n" * 1000, 431)):
            reader, writer = await connect(server)
            writer.write(data)
            status, headers, body = await response(reader)
            assert status == want and json.loads(body)["error"]["code"] == want
            assert headers["connection"] == "close"
            assert await closed(reader)
        # a head dripped in small pieces that never ends
        reader, writer = await connect(server)
        writer.write(b"GET / HTTP/1.1\r\n")
        for _ in range(10):
            writer.write(b"X-Drip: " + b"d" * 500 + b"\r\n")
            await writer.drain()
            await asyncio.sleep(0.01)
        assert (await response(reader))[0] == 431
        assert await closed(reader)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


@pytest.mark.asyncio
async def test_client_disconnect_cancels_the_handler() -> None:
    async with serving() as (server, app):
        _reader, writer = await connect(server)
        writer.write(req("GET", "/sleep?s=30"))
        await asyncio.wait_for(app.started.wait(), 5)
        writer.close()
        for _ in range(100):
            if app.cancelled:
                break
            await asyncio.sleep(0.02)
        assert app.cancelled == [True]  # cancelled, and the transport says it is closing


@pytest.mark.asyncio
async def test_streaming_response_is_chunked_and_respects_flow_control() -> None:
    n = 64  # 16 MiB: more than the kernel's socket buffers take
    async with serving() as (server, app):
        async with aiohttp.ClientSession() as http, \
                http.get(f"http://127.0.0.1:{server.port}/stream?n={n}") as r:
            assert r.headers["Transfer-Encoding"] == "chunked"
            await asyncio.sleep(0.3)  # the client reads nothing: the handler must wait
            assert app.written < n
            conns = list(server.conns)
            assert conns[0].transport is not None
            assert conns[0].transport.get_write_buffer_size() < 2 * 1024 * 1024
            body = await r.read()
        assert app.written == n
        assert body == b"".join(bytes([65 + k % 26]) * BIG_CHUNK for k in range(n))
        # HTTP/1.0: no chunks; the body ends with the connection
        reader, writer = await connect(server)
        writer.write(req("GET", "/stream?n=2", version="1.0"))
        status, headers, body = await response(reader)
        assert status == 200
        assert "transfer-encoding" not in headers and headers["connection"] == "close"
        assert body == b"A" * BIG_CHUNK + b"B" * BIG_CHUNK


@pytest.mark.asyncio
async def test_date_server_head_and_handler_errors(caplog: pytest.LogCaptureFixture) -> None:
    async with serving() as (server, _):
        reader, writer = await connect(server)
        writer.write(req("GET", "/x"))
        _, headers, _ = await response(reader)
        assert headers["server"] == "kvroute"
        assert email.utils.parsedate_to_datetime(headers["date"]).tzinfo is not None
        writer.write(req("GET", "/server"))
        assert (await response(reader))[1]["server"] == "upstream/1.0"  # given: kept
        # HEAD: the head only (the next response on the connection comes out whole)
        writer.write(req("HEAD", "/h", b"abc") + req("POST", "/after", b"next"))
        status_line = await reader.readline()
        assert status_line.startswith(b"HTTP/1.1 200")
        head = b""
        while (line := await reader.readline()) != b"\r\n":
            head += line
        assert b"Content-Length: 3" in head
        assert (await response(reader))[2] == b"next"
        # a handler's exception: logged, a JSON 500, and the connection still serves
        writer.write(req("GET", "/boom"))
        status, headers, body = await response(reader)
        assert status == 500 and json.loads(body)["error"]["type"] == "internal_error"
        assert "Traceback" not in body.decode()
        assert any("boom" in r.getMessage() or r.exc_info for r in caplog.records)
        writer.write(req("GET", "/x"))
        assert (await response(reader))[0] == 200
        # a header with CR LF in it is never sent: a 500 instead
        writer.write(req("GET", "/inject"))
        status, headers, _ = await response(reader)
        assert status == 500 and "injected" not in headers


@pytest.mark.asyncio
async def test_idle_keep_alive_connections_time_out() -> None:
    async with serving(keepalive_timeout=0.2) as (server, _):
        reader, writer = await connect(server)
        writer.write(req("GET", "/sleep?s=0.5"))  # busy longer than the timeout: kept
        assert (await response(reader))[0] == 200
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        assert await closed(reader)
        assert 0.1 < loop.time() - t0 < 2.0


@pytest.mark.asyncio
async def test_graceful_shutdown() -> None:
    """Shutdown: the listener closes, idle connections close, a running handler finishes
    (its response says Connection: close); one past the timeout is cancelled."""
    async with serving() as (server, app):
        idle_r, idle_w = await connect(server)
        idle_w.write(req("GET", "/x"))
        await response(idle_r)
        busy_r, busy_w = await connect(server)
        busy_w.write(req("GET", "/sleep?s=0.3"))
        await asyncio.wait_for(app.started.wait(), 5)
        stopping = asyncio.create_task(server.shutdown(5.0))
        await asyncio.sleep(0.05)
        with pytest.raises(OSError):
            await connect(server)
        assert await closed(idle_r)
        status, headers, _ = await response(busy_r)
        assert status == 200 and headers["connection"] == "close"
        assert await closed(busy_r)
        await asyncio.wait_for(stopping, 5)
    async with serving() as (server, app):
        reader, writer = await connect(server)
        writer.write(req("GET", "/sleep?s=30"))
        await asyncio.wait_for(app.started.wait(), 5)
        await asyncio.wait_for(server.shutdown(0.2), 5)
        assert await closed(reader)
        await asyncio.sleep(0.05)
        assert len(app.cancelled) == 1


def test_error_response_shape() -> None:
    resp = error_response(404, "no route GET /x", "not_found", {"X-A": "1"})
    assert json.loads(resp.body) == {"error": {"message": "no route GET /x",
                                               "type": "not_found", "code": 404}}
    assert resp.status == 404 and resp.headers["X-A"] == "1"
