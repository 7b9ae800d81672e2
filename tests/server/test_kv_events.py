"""The live router on KV events, on real sockets: emulated workers publish vLLM events
from their radix caches; the router's exact index agrees with every engine's true cache
after its own evictions, survives a router restart by replay, and is reachable through
``--kv-events`` and the admin API; ``/metrics`` exports the feeds and the expected beside
the reported hit rate."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp import web

pytest.importorskip("zmq")
pytest.importorskip("msgspec")

from kvroute.errors import ConfigError
from kvroute.routing import make_router_policy
from kvroute.server.app import RouterApp, ServeConfig, build_app
from kvroute.server.kv_events import FeedSpec, parse_feed, parse_feeds
from kvroute.worker import EmulatedConfig, EmulatedWorker, create_app
from kvroute.worker.http_api import WORKER_KEY
from kvroute.workloads.tokenizer import load_tokenizer

ZMQ = "tcp://127.0.0.1:*"
BLOCK = 16


async def _worker() -> tuple[web.AppRunner, str, EmulatedWorker]:
    app = create_app(EmulatedConfig(speed=50.0, capacity=900, eviction="lru",
                                    kv_events_endpoint=ZMQ, kv_events_replay_endpoint=ZMQ,
                                    block_size=BLOCK))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}", app[WORKER_KEY]


def _feed(ew: EmulatedWorker) -> str:
    assert ew.events is not None
    return f"{ew.events.endpoint},{ew.events.replay_endpoint}"


async def _router(urls: list[str], feeds: list[str]) -> RouterApp:
    cfg = ServeConfig(worker_urls=urls, tokenizer=load_tokenizer(None), kv_events=feeds,
                      health_interval=0, metrics_interval=0)
    app = build_app(cfg, make_router_policy("cache_aware"))
    await app.start("127.0.0.1", 0)
    return app


async def _synced(app: RouterApp, workers: list[EmulatedWorker], timeout: float = 10) -> None:
    """Wait (polling, with a deadline) until every feed applied its engine's last batch."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        done = True
        for ew in workers:
            assert ew.events is not None
            feed = next(f for f in app.kv_events.feeds.values()
                        if f.spec.endpoint == ew.events.endpoint)
            want = ew.events.next_seq - 1
            done &= (ew.events.pending == 0 and feed.sub.in_sync
                     and (want < 0 or feed.sub.last_seq == want))
        if done:
            return
        assert loop.time() < end, "the router's feeds did not catch up"
        await asyncio.sleep(0.01)


def _prompts(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    systems = [" ".join(f"sys{k} word{j}" for j in range(int(rng.integers(40, 120))))
               for k in range(5)]
    return [systems[int(rng.integers(5))] + " question " +
            " ".join(str(int(x)) for x in rng.integers(0, 999, int(rng.integers(1, 30))))
            for _ in range(n)]


def _agreement(app: RouterApp, workers: list[EmulatedWorker], texts: list[str]) -> tuple[int, int]:
    probes = agree = 0
    for k, ew in enumerate(workers):
        source = app.router.caches.source(k)
        assert source is not None and source.in_sync
        assert ew.worker is not None
        for text in texts:
            units = app.prompts.units("completions", {"prompt": text})
            probes += 1
            agree += source.match(units) == ew.worker.cache.peek(units) // BLOCK * BLOCK
    return probes, agree


def _metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.mark.asyncio
async def test_exact_index_agrees_with_the_engines_and_survives_a_router_restart() -> None:
    started = [await _worker() for _ in range(2)]
    runners = [r for r, _, _ in started]
    urls = [u for _, u, _ in started]
    workers = [ew for _, _, ew in started]
    feeds = [_feed(ew) for ew in workers]
    app = await _router(urls, feeds)
    second: RouterApp | None = None
    try:
        texts = _prompts(60, seed=3)
        base = f"http://127.0.0.1:{app.port}"
        async with aiohttp.ClientSession() as http:
            for text in texts:
                async with http.post(base + "/v1/completions",
                                     json={"prompt": text, "max_tokens": 2}) as r:
                    assert r.status == 200, await r.text()
            await _synced(app, workers)
            probes, agree = _agreement(app, workers, texts + _prompts(30, seed=4))
            assert agree == probes == 180  # 100% of the probes
            for k in range(2):
                feed = app.kv_events.feeds[urls[k]]
                assert feed.index.stats.removed > 0  # the engines evicted on their own
            async with http.get(base + "/metrics") as r:
                page = await r.text()
            assert _metric(page, "kvroute_kv_events_total", kind="BlockStored") > 0
            assert _metric(page, "kvroute_kv_events_total", kind="BlockRemoved") > 0
            assert _metric(page, "kvroute_kv_events_in_sync") == 2
            assert _metric(page, "kvroute_kv_event_lost_total") == 0
            expected = _metric(page, "kvroute_hit_expected_units_total", index="exact")
            reported = _metric(page, "kvroute_hit_reported_tokens_total", index="exact")
            prompt = _metric(page, "kvroute_hit_prompt_units_total", index="exact")
            assert prompt > 0 and 0 < expected <= reported
            # token ids are the units here: the two reported counters agree
            assert _metric(page, "kvroute_hit_reported_units_total", index="exact") == reported
            async with http.get(base + "/workers") as r:
                listed = (await r.json())["workers"]
            assert all(w["kv_events"]["in_sync"] and w["kv_events"]["blocks"] > 0
                       for w in listed)

            # a restarted router rebuilds the same exact index by replay
            second = await _router(urls, feeds)
            await _synced(second, workers)
            probes, agree = _agreement(second, workers, texts)
            assert agree == probes == 120
            for k in range(2):
                assert (second.kv_events.feeds[urls[k]].index.hashes()
                        == app.kv_events.feeds[urls[k]].index.hashes())

            # an engine's cache flush reaches the index as AllBlocksCleared
            assert workers[0].flush() is None
            await _synced(app, workers)
            assert len(app.kv_events.feeds[urls[0]].index) == 0
            assert _agreement(app, workers, texts[:10]) == (20, 20)
    finally:
        for a in (app, second):
            if a is not None:
                await a.stop()
        for runner in runners:
            await runner.cleanup()


@pytest.mark.asyncio
async def test_admin_adds_a_worker_with_its_feed_and_removes_both() -> None:
    r0, u0, w0 = await _worker()
    r1, u1, w1 = await _worker()
    app = await _router([u0], [_feed(w0)])
    try:
        base = f"http://127.0.0.1:{app.port}"
        async with aiohttp.ClientSession() as http:
            bad = {"url": u1, "kv_events": "nonsense"}
            async with http.post(base + "/workers", json=bad) as r:
                assert r.status == 400
                assert "not a ZMQ address" in (await r.json())["error"]["message"]
            assert len(app.members) == 1  # a bad feed adds nothing
            async with http.post(base + "/workers",
                                 json={"url": u1, "kv_events": _feed(w1)}) as r:
                assert r.status == 200
            assert len(app.kv_events) == 2 and app.router.caches.source(1) is not None
            async with http.post(base + "/v1/completions",
                                 json={"prompt": "hello " * 40, "max_tokens": 2}) as r:
                assert r.status == 200
            await _synced(app, [w0, w1])
            async with http.delete(base + "/workers", params={"url": u1}) as r:
                assert r.status == 200
            assert len(app.kv_events) == 1 and len(app.router.caches) == 1
    finally:
        await app.stop()
        await r0.cleanup()
        await r1.cleanup()


def test_feed_specs() -> None:
    assert parse_feed("tcp://h:1,tcp://h:2") == FeedSpec("tcp://h:1", "tcp://h:2")
    assert parse_feed("tcp://h:1") == FeedSpec("tcp://h:1")
    assert parse_feed("-") is None and parse_feed(None) is None
    assert parse_feeds(None, 2) == [None, None]
    assert parse_feeds(["-", "tcp://h:1"], 2) == [None, FeedSpec("tcp://h:1")]
    for bad in (["tcp://h:1"], ["h:1", "-"], ["tcp://a:1,tcp://a:2,tcp://a:3", "-"]):
        with pytest.raises(ConfigError):
            parse_feeds(bad, 2)


def test_kv_events_need_token_ids() -> None:
    cfg: dict[str, Any] = {"worker_urls": ["http://127.0.0.1:1"], "kv_events": ["tcp://h:1"]}
    with pytest.raises(ConfigError, match="--tokenizer"):
        build_app(ServeConfig(**cfg), make_router_policy("round_robin"))
