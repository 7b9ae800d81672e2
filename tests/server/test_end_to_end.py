"""End to end on real sockets: the router in front of 3 emulated workers (what `kvroute up`
starts), every endpoint, a worker killed and brought back, and bad input."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from aiohttp import web

from kvroute.routing import make_router_policy
from kvroute.server.app import ServeConfig, build_app
from kvroute.worker import EmulatedConfig, create_app


async def _start(app: web.Application, port: int = 0) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    return runner, runner.addresses[0][1]


def _worker() -> web.Application:
    return create_app(EmulatedConfig(speed=50.0, eviction="rlt"))


async def _sse(resp: aiohttp.ClientResponse) -> list[str]:
    body = (await resp.read()).decode()
    return [line[6:] for line in body.splitlines() if line.startswith("data: ")]


@pytest.mark.asyncio
async def test_every_endpoint_failover_and_bad_input() -> None:
    """All endpoints answer through the router; a dead worker is avoided without failing
    non-streaming requests and used again once back; bad input gets a clear 4xx."""
    workers = [await _start(_worker()) for _ in range(3)]
    urls = [f"http://127.0.0.1:{port}" for _, port in workers]
    cfg = ServeConfig(worker_urls=urls, api_key="secret",
                      health_interval=0.2, failure_threshold=1, cooldown_s=0.3)
    router = build_app(cfg, make_router_policy("round_robin"))
    await router.start("127.0.0.1", 0)
    base = f"http://127.0.0.1:{router.port}"
    try:
        async with aiohttp.ClientSession() as http:
            # every endpoint, streaming and not
            for path, body in (("/v1/completions", {"prompt": "hello there", "max_tokens": 3}),
                               ("/v1/chat/completions",
                                {"messages": [{"role": "user", "content": "hi"}],
                                 "max_tokens": 3}),
                               ("/generate", {"text": "hello there",
                                              "sampling_params": {"max_new_tokens": 3}})):
                async with http.post(base + path, json=body) as r:
                    assert r.status == 200 and r.headers["X-Kvroute-Worker"] in urls
                    data = await r.json()
                    assert ("meta_info" in data) if path == "/generate" else ("usage" in data)
                async with http.post(base + path, json={**body, "stream": True}) as r:
                    assert r.status == 200
                    events = await _sse(r)
                    assert events[-1] == "[DONE]" and len(events) >= 4
            async with http.get(base + "/v1/models") as r:
                assert r.status == 200 and (await r.json())["data"]

            # kill worker 1: no non-streaming request fails, and it is not chosen
            await workers[1][0].cleanup()
            served = []
            for k in range(9):
                async with http.post(base + "/v1/completions",
                                     json={"prompt": f"q{k}", "max_tokens": 2}) as r:
                    assert r.status == 200
                    served.append(r.headers["X-Kvroute-Worker"])
            assert urls[1] not in served[3:]  # after its first failure it is out

            # bring it back on the same port: the health checks restore it
            workers[1] = (await _start(_worker(), workers[1][1]))
            for _ in range(50):
                await asyncio.sleep(0.1)
                async with http.get(base + "/workers",
                                    headers={"Authorization": "Bearer secret"}) as r:
                    listed = (await r.json())["workers"]
                if all(w["healthy"] for w in listed):
                    break
            served = []
            for k in range(6):
                async with http.post(base + "/v1/completions",
                                     json={"prompt": f"back {k}", "max_tokens": 2}) as r:
                    assert r.status == 200
                    served.append(r.headers["X-Kvroute-Worker"])
            assert urls[1] in served

            # bad input: a clear 4xx each, and the router keeps serving
            async with http.post(base + "/v1/completions", data=b"{not json",
                                 headers={"Content-Type": "application/json"}) as r:
                assert r.status == 400 and "error" in await r.json()
            async with http.post(base + "/v1/completions", json={"max_tokens": 2}) as r:
                assert r.status == 400
            big = json.dumps({"prompt": "x" * 10_000_000})
            async with http.post(base + "/v1/completions", data=big,
                                 headers={"Content-Type": "application/json"}) as r:
                assert r.status in (400, 413)
            async with http.delete(base + "/workers", json={"url": "http://nowhere:1"},
                                   headers={"Authorization": "Bearer secret"}) as r:
                assert r.status == 404
            async with http.post(base + "/workers", json={"url": "http://x:1"},
                                 headers={"Authorization": "Bearer wrong"}) as r:
                assert r.status == 401
            async with http.post(base + "/v1/completions",
                                 json={"prompt": "still fine", "max_tokens": 2}) as r:
                assert r.status == 200
    finally:
        await router.stop()
        for runner, _ in workers:
            await runner.cleanup()
