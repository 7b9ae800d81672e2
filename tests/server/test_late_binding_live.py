"""Late binding live: ``learned`` holds requests at the router while both emulated workers
have prefill queued and short decodes in flight; every request is still answered,
``kvroute_held_seconds`` counts each one, and the decision log gives each its held time."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import aiohttp
import pytest

from kvroute.routing import make_router_policy
from kvroute.server.app import ServeConfig, build_app
from kvroute.worker import EmulatedConfig, create_app
from tests.server.test_end_to_end import _start

REQUESTS = 24


async def _one(http: aiohttp.ClientSession, base: str, i: int) -> int:
    body = {"prompt": f"request {i} " + "lorem ipsum dolor sit amet " * 120,
            "max_tokens": 4, "stream": True}
    async with http.post(base + "/v1/completions", json=body) as r:
        await r.read()
        return r.status


@pytest.mark.asyncio
async def test_learned_holds_requests_and_answers_them_all(tmp_path: Path) -> None:
    workers = [await _start(create_app(EmulatedConfig(speed=2.0, eviction="rlt")))
               for _ in range(2)]
    urls = [f"http://127.0.0.1:{port}" for _, port in workers]
    log = tmp_path / "decisions.jsonl"
    router = build_app(ServeConfig(worker_urls=urls, metrics_interval=0,
                                   decision_log=str(log)),
                       make_router_policy("learned"))
    await router.start("127.0.0.1", 0)
    base = f"http://127.0.0.1:{router.port}"
    try:
        async with aiohttp.ClientSession() as http:
            tasks = []
            for i in range(REQUESTS):  # arrivals faster than two workers prefill them
                tasks.append(asyncio.create_task(_one(http, base, i)))
                await asyncio.sleep(0.02)
            assert await asyncio.gather(*tasks) == [200] * REQUESTS
            async with http.get(base + "/metrics") as r:
                text = await r.text()
        count = float(re.search(r"^kvroute_held_seconds_count (\S+)$", text, re.M)[1])
        not_held = float(re.search(r'^kvroute_held_seconds_bucket\{le="0.0"\} (\S+)$', text,
                                   re.M)[1])
        assert count == REQUESTS
        assert not_held < REQUESTS  # some were held
        total = float(re.search(r"^kvroute_held_seconds_sum (\S+)$", text, re.M)[1])
        held = [x["held_s"] for x in map(json.loads, log.read_text().splitlines())
                if x["event"] == "decision"]
        assert len(held) == REQUESTS and sum(h > 0 for h in held) == REQUESTS - not_held
        assert sum(held) == pytest.approx(total, abs=1e-4)
        assert len(router.forwarder.holds) == 0 and router.router.open_dispatches == 0
    finally:
        await router.stop()
        for runner, _ in workers:
            await runner.cleanup()
