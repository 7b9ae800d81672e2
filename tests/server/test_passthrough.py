"""The engines' endpoints that are not generation (embeddings, tokenize, rerank, ...) go
through the router as received, to the least busy available worker."""

from __future__ import annotations

import socket

import aiohttp
import pytest
from aiohttp import web

from kvroute.routing import make_router_policy
from kvroute.server.app import ServeConfig, build_app
from kvroute.server.passthrough import PASSTHROUGH


async def _engine(name: str) -> tuple[web.AppRunner, str]:
    async def echo(request: web.Request) -> web.Response:
        return web.json_response({"engine": name, "path": request.path,
                                  "query": request.query_string,
                                  "body": await request.json(),
                                  "auth": request.headers.get("Authorization")})

    app = web.Application()
    for path in PASSTHROUGH:
        app.router.add_post(path, echo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


def _dead() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.mark.asyncio
async def test_passthrough_goes_to_the_least_busy_worker_as_received() -> None:
    (ra, a), (rb, b) = await _engine("a"), await _engine("b")
    router = build_app(ServeConfig(worker_urls=[_dead(), a, b], health_interval=0,
                                   metrics_interval=0, backoff_base=0.001),
                       make_router_policy("round_robin"))
    await router.start("127.0.0.1", 0)
    base = f"http://127.0.0.1:{router.port}"
    try:
        router.router.workers[1].in_flight = 3  # a is busy: b is the least busy of a, b
        async with aiohttp.ClientSession() as http:
            for path in ("/v1/embeddings", "/tokenize", "/v1/rerank"):
                async with http.post(f"{base}{path}?x=1", json={"input": "hi"},
                                     headers={"Authorization": "Bearer k"}) as r:
                    assert r.status == 200
                    got = await r.json()
                    # the dead worker (no requests in flight) was tried first, then b
                    assert got == {"engine": "b", "path": path, "query": "x=1",
                                   "body": {"input": "hi"}, "auth": "Bearer k"}
                    assert r.headers["X-Kvroute-Worker"] == b
            assert router.router.open_dispatches == 0  # no accounting
            await rb.cleanup()
            await ra.cleanup()
            async with http.post(f"{base}/v1/embeddings", json={"input": "hi"}) as r:
                assert r.status == 503
    finally:
        await router.stop()
