"""Ranks of a data-parallel engine as workers of their own (``URL@R``): addressing, load
and health read once per engine, each rank's own series."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from kvroute.errors import ConfigError
from kvroute.routing import Router, make_router_policy
from kvroute.server.engine_metrics import EngineLoad, engine_load
from kvroute.server.membership import Membership, Worker, normalize_url, split_rank, worker_urls
from tests.server.test_engine_metrics import VLLM_V1
from tests.server.test_router_app import FakeWorker, cluster

SGLANG_DP = """sglang:num_running_reqs{dp_rank="0",model_name="m"} 2
sglang:num_running_reqs{dp_rank="1",model_name="m"} 9
sglang:num_queue_reqs{dp_rank="0",model_name="m"} 0
sglang:num_queue_reqs{dp_rank="1",model_name="m"} 4
sglang:token_usage{dp_rank="0",model_name="m"} 0.1
sglang:token_usage{dp_rank="1",model_name="m"} 0.7
sglang:max_total_num_tokens{dp_rank="0",model_name="m"} 50000
sglang:max_total_num_tokens{dp_rank="1",model_name="m"} 50000
"""
TOTALS_ONLY = """vllm:num_requests_running{model_name="m"} 6
vllm:num_requests_waiting{model_name="m"} 3
vllm:kv_cache_usage_perc{model_name="m"} 0.5
vllm:cache_config_info{block_size="16",num_gpu_blocks="1000"} 1
"""


def test_a_rank_is_written_url_at_r_and_kept_through_normalizing() -> None:
    assert split_rank("http://h:8000@3") == ("http://h:8000", 3)
    assert split_rank("http://h:8000") == ("http://h:8000", None)
    assert normalize_url(" http://h:8000/@2 ") == "http://h:8000@2"
    assert worker_urls(["http://h:1@0", "http://h:1@1", "http://h:1"]) == [
        "http://h:1@0", "http://h:1@1", "http://h:1"]
    with pytest.raises(ConfigError, match="duplicate"):
        worker_urls(["http://h:1@0", "http://h:1/@0"])
    with pytest.raises(ConfigError, match="must start with http"):
        normalize_url("h:1@0")
    w = Worker("http://h:1@4")
    assert (w.base, w.rank, w.headers()) == ("http://h:1", 4, [("X-data-parallel-rank", "4")])
    assert Worker("http://h:1").headers() == []


def test_ranks_are_members_found_and_removed_one_by_one() -> None:
    router = Router(make_router_policy("round_robin"), 2)
    m = Membership(["http://h:1@0", "http://h:1@1"], router)
    assert m.find("http://h:1/@1") == 1 and m.find("http://h:1") is None
    m.add("http://h:1@2")
    assert [w.rank for w in m.workers] == [0, 1, 2] and len(router.workers) == 3
    m.remove("http://h:1@0", 0.0)
    assert [w.url for w in m.workers] == ["http://h:1@1", "http://h:1@2"]


def test_engine_load_reads_one_ranks_series() -> None:
    assert engine_load(VLLM_V1, rank=1, ranks=2) == EngineLoad(
        running=4, waiting=0, kv_usage=0.25, kv_capacity=16_000)
    assert engine_load(SGLANG_DP, rank=1, ranks=2) == EngineLoad(
        running=9, waiting=4, kv_usage=0.7, kv_capacity=50_000)
    # a page with the engine's totals only: each of the N ranks gets its share
    assert engine_load(TOTALS_ONLY, rank=0, ranks=3) == EngineLoad(
        running=2, waiting=1, kv_usage=0.5, kv_capacity=16_000 // 3)
    # a page that labels its ranks but not this one: no load for it
    assert engine_load(VLLM_V1, rank=7, ranks=8) is None
    # without a rank, as before: the whole engine
    assert engine_load(VLLM_V1).running == 7


class DataParallelFake(FakeWorker):
    """An engine with ranks behind one URL: records the rank header of every request and
    how often /health and /metrics were read."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.ranks: list[str | None] = []
        self.fields: list[Any] = []  # the body's data_parallel_rank, per request
        self.pages = self.probes = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.ranks.append(request.headers.get("X-data-parallel-rank"))
        self.fields.append((await request.json()).get("data_parallel_rank"))
        return await super().handle(request)

    async def health(self, request: web.Request) -> web.Response:
        self.probes += 1
        return await super().health(request)

    async def metrics_page(self, request: web.Request) -> web.Response:
        self.pages += 1
        return await super().metrics_page(request)


@pytest.mark.asyncio
async def test_each_rank_is_routed_to_with_its_header_at_the_base_url() -> None:
    engine = await DataParallelFake(metrics=VLLM_V1).start()
    try:
        urls = [f"{engine.url}@0", f"{engine.url}@1"]
        async with cluster(urls, policy="round_robin") as (client, rt):
            seen = []
            for _ in range(4):  # a rank header from the client is replaced by the router's
                r = await client.post("/v1/completions", headers={"X-Data-Parallel-Rank": "5"},
                                      json={"prompt": "hello", "max_tokens": 1})
                assert r.status == 200
                seen.append(r.headers["X-Kvroute-Worker"])
            assert seen == [urls[0], urls[1], urls[0], urls[1]]
            assert engine.ranks == ["0", "1", "0", "1"]
            assert (await client.get("/v1/models")).status == 200

            await rt.checks.scrape_engines()
            await rt.checks.check_health()
            assert (engine.pages, engine.probes) == (1, 1)  # once per engine, not per rank
            states = rt.router.workers
            assert [(s.running, s.waiting, s.kv_usage) for s in states] == [
                (3, 1, 0.5), (4, 0, 0.25)]
            assert [s.kv_capacity for s in states] == [16_000, 16_000]
            metrics = await (await client.get("/metrics")).text()
            assert f'worker="{urls[1]}"' in metrics
    finally:
        await engine.stop()


@pytest.mark.asyncio
async def test_routing_to_the_ranks_of_an_emulated_engine_with_their_events() -> None:
    """One emulated engine with two ranks (``kvroute worker --dp-size 2``): the router's
    exact index per rank, fed by that rank's events, says what the rank's engine then
    reports; a prompt asked again goes back to the rank that holds it and hits there."""
    pytest.importorskip("zmq")
    pytest.importorskip("msgspec")
    from kvroute.routing import make_router_policy
    from kvroute.server.app import ServeConfig, build_app
    from kvroute.worker import RANKS_KEY, EmulatedConfig, create_app
    from kvroute.workloads.tokenizer import load_tokenizer
    from tests.server.test_end_to_end import _start

    zmq = "tcp://127.0.0.1:*"
    engine = create_app(EmulatedConfig(speed=50.0, eviction="rlt", dp_size=2,
                                       kv_events_endpoint=zmq, kv_events_replay_endpoint=zmq))
    runner, port = await _start(engine)
    url = f"http://127.0.0.1:{port}"
    feeds = [f"{e},{r}" for e, r in engine[RANKS_KEY].kv_event_endpoints]
    assert len(feeds) == 2 and feeds[0] != feeds[1]
    router = build_app(ServeConfig(worker_urls=[f"{url}@0", f"{url}@1"], kv_events=feeds,
                                   tokenizer=load_tokenizer(None), health_interval=0,
                                   metrics_interval=0),
                       make_router_policy("cache_aware_v2"))
    await router.start("127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{router.port}") as http:
            prompt = {"prompt": "the same long question " * 40, "max_tokens": 2}
            first = await http.post("/v1/completions", json=prompt)
            chosen = first.headers["X-Kvroute-Worker"]
            rank = int(chosen.rpartition("@")[2])
            feed = router.kv_events.feeds[chosen]
            for _ in range(250):  # until the rank's events reached the router
                if len(feed.index):
                    break
                await asyncio.sleep(0.02)
            other_feed = router.kv_events.feeds[f"{url}@{1 - rank}"]
            assert len(feed.index) > 0 and len(other_feed.index) == 0
            again = await http.post("/v1/completions", json=prompt)
            assert again.headers["X-Kvroute-Worker"] == chosen
            usage = (await again.json())["usage"]
            assert usage["prompt_tokens_details"]["cached_tokens"] > 0
            # the other rank's engine holds nothing of it
            other = engine[RANKS_KEY].ranks[1 - rank]
            assert other.worker is not None and other.worker.cache.total == 0
            await router.checks.scrape_engines()
            states = router.router.workers
            assert states[rank].kv_capacity == states[1 - rank].kv_capacity > 0
    finally:
        await router.stop()
        await runner.cleanup()


def test_serve_dp_size_lists_every_rank_and_its_feed() -> None:
    """`kvroute serve --dp-size N`: each engine URL as its N ranks, each --kv-events entry
    as the ranks' feeds at the ports + r (where vLLM publishes them)."""
    import argparse

    from kvroute.cli import serve as serve_cli
    from kvroute.server.kv_events import rank_feeds
    from kvroute.server.membership import with_ranks

    assert with_ranks(["http://h:1/", "http://g:2"], 2) == [
        "http://h:1@0", "http://h:1@1", "http://g:2@0", "http://g:2@1"]
    assert with_ranks(["http://h:1@3"], 1) == ["http://h:1@3"]
    with pytest.raises(ConfigError, match="names a rank already"):
        with_ranks(["http://h:1@0"], 2)
    assert rank_feeds(None, 4) is None
    pytest.importorskip("zmq")
    pytest.importorskip("msgspec")
    assert rank_feeds(["tcp://h:5557,tcp://h:5567", "-"], 2) == [
        "tcp://h:5557,tcp://h:5567", "tcp://h:5558,tcp://h:5568", "-", "-"]
    ap = argparse.ArgumentParser()
    serve_cli.add_parser(ap.add_subparsers())
    with pytest.raises(SystemExit):  # argparse: not a number of ranks
        ap.parse_args(["serve", "--worker-urls", "http://a:1", "--dp-size", "0"])
    args = ap.parse_args(["serve", "--worker-urls", "http://a:1@0", "--dp-size", "2"])
    with pytest.raises(ConfigError, match="names a rank already"):
        args.func(args)


@pytest.mark.asyncio
async def test_the_rank_in_the_body_too_for_engines_that_read_it_there() -> None:
    """``dp_rank_field`` (SGLang reads the rank from the body): the body's last member
    names the rank, over one the client sent; without it the body is left alone."""
    engine = await DataParallelFake().start()
    try:
        urls = [f"{engine.url}@0", f"{engine.url}@1"]
        async with cluster(urls, policy="round_robin",
                           dp_rank_field="data_parallel_rank") as (client, _):
            for body in ({"prompt": "hi", "max_tokens": 1},
                         {"prompt": "hi", "max_tokens": 1, "data_parallel_rank": 7}):
                assert (await client.post("/v1/completions", json=body)).status == 200
            assert engine.fields == [0, 1] and engine.ranks == ["0", "1"]
        async with cluster(urls, policy="round_robin") as (client, _):
            assert (await client.post("/v1/completions",
                                      json={"prompt": "hi", "max_tokens": 1})).status == 200
            assert engine.fields[-1] is None
    finally:
        await engine.stop()
