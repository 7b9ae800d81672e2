"""The emulated worker with data parallelism (``dp_size`` ranks behind one port, as
``vllm serve --data-parallel-size``): rank choice by header or by load, per-rank metrics
and KV events, flush and health over every rank, and one rank exactly as before."""

from __future__ import annotations

import argparse
import asyncio
import re
import socket
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest

pytest.importorskip("aiohttp")
pytest.importorskip("prometheus_client")
pytest_asyncio = pytest.importorskip("pytest_asyncio")

from aiohttp.test_utils import TestClient, TestServer  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from kvroute.cli import worker as worker_cli  # noqa: E402
from kvroute.errors import ConfigError  # noqa: E402
from kvroute.worker import RANKS_KEY, WORKER_KEY, DataParallelWorker  # noqa: E402
from kvroute.worker.emulated import EmulatedConfig  # noqa: E402
from kvroute.worker.http_api import create_app  # noqa: E402
from kvroute.worker.kv_publisher import rank_endpoint  # noqa: E402

PROMPT = "You are a helpful assistant. " * 20 + "Tell me about radix trees."
HEADER = "X-data-parallel-rank"
CAPACITY = 8192


async def _client(**config: Any) -> TestClient:
    app = create_app(EmulatedConfig(**{"speed": 50, "capacity": CAPACITY, **config}))
    c = TestClient(TestServer(app))
    await c.start_server()
    return c


@pytest_asyncio.fixture
async def dp2() -> AsyncIterator[TestClient]:
    c = await _client(dp_size=2)
    try:
        yield c
    finally:
        await c.close()


async def _complete(c: TestClient, prompt: Any = PROMPT, max_tokens: int = 2,
                    rank: str | None = None, header: str = HEADER) -> dict[str, Any]:
    r = await c.post("/v1/completions", json={"prompt": prompt, "max_tokens": max_tokens},
                     headers={header: rank} if rank is not None else None)
    assert r.status == 200, await r.text()
    body: dict[str, Any] = await r.json()
    return body


def _cached(body: dict[str, Any]) -> int:
    return int(body["usage"]["prompt_tokens_details"]["cached_tokens"])


async def _page(c: TestClient) -> str:
    r = await c.get("/metrics")
    assert r.status == 200
    return await r.text()


def _samples(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """name -> (sorted labels) -> value, for every sample of a page."""
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = defaultdict(dict)
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[s.name][tuple(sorted(s.labels.items()))] = s.value
    return out


def _by_rank(samples: dict[str, dict[tuple[tuple[str, str], ...], float]], name: str,
             label: str) -> dict[str, float]:
    return {dict(labels)[label]: v for labels, v in samples[name].items()}


# ------------------------------------------------------------------ rank choice
@pytest.mark.asyncio
async def test_header_sends_a_request_to_its_rank(dp2: TestClient) -> None:
    """Each rank has its own cache: a prompt sent twice to rank 1 hits there the second
    time, and the same prompt then sent to rank 0 does not (the header in any case)."""
    dp = dp2.app[RANKS_KEY]
    assert dp.dp_size == 2 and dp2.app[WORKER_KEY] is dp.ranks[0]
    first = await _complete(dp2, rank="1")
    second = await _complete(dp2, rank="1", header="x-data-parallel-rank")
    n = second["usage"]["prompt_tokens"]
    assert _cached(first) == 0 and _cached(second) == n - 1
    assert _cached(await _complete(dp2, rank=" 0 ", header="X-DATA-PARALLEL-RANK")) == 0
    assert _cached(await _complete(dp2, rank="0")) == n - 1
    for ew in dp.ranks:
        assert ew.worker is not None and ew.worker.cache.total > 0


@pytest.mark.asyncio
@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions", "/generate"])
@pytest.mark.parametrize("value", ["2", "-1", "abc", "1.0", "", "+1", "99999999999999999"])
async def test_a_bad_rank_header_is_400(dp2: TestClient, path: str, value: str) -> None:
    """A header that names no rank is a JSON 400 naming the header and the valid range;
    nothing is queued."""
    body = {"/v1/completions": {"prompt": "hi", "max_tokens": 1},
            "/v1/chat/completions": {"messages": [{"role": "user", "content": "hi"}],
                                     "max_tokens": 1},
            "/generate": {"text": "hi", "sampling_params": {"max_new_tokens": 1}}}[path]
    r = await dp2.post(path, json=body, headers={HEADER: value})
    assert r.status == 400
    err = (await r.json())["error"]
    assert HEADER in err["message"] and "[0, 2)" in err["message"]
    assert err["type"] == "invalid_request_error"
    assert all(not ew.pending and ew.load == 0 for ew in dp2.app[RANKS_KEY].ranks)


@pytest.mark.asyncio
async def test_one_rank_takes_rank_0_or_no_header() -> None:
    """With one rank the header may be 0 or absent; any other value is a 400."""
    c = await _client()
    try:
        await _complete(c)
        await _complete(c, rank="0")
        r = await c.post("/v1/completions", json={"prompt": "hi", "max_tokens": 1},
                         headers={HEADER: "1"})
        assert r.status == 400
        assert "[0, 1)" in (await r.json())["error"]["message"]
    finally:
        await c.close()


@pytest.mark.asyncio
async def test_balancer_picks_the_least_loaded_rank() -> None:
    """Without a header: the rank of least vLLM score (4 x queued + running), ties to the
    lowest rank (requests queued straight on the ranks, no clock involved)."""
    dp = DataParallelWorker(EmulatedConfig(speed=50, capacity=CAPACITY, dp_size=3))
    dp.start()
    try:
        ids = np.arange(1, 40)
        assert dp.pick().rank == 0
        dp.ranks[0].submit([ids, ids], 4)
        assert dp.pick().rank == 1
        dp.ranks[1].submit([ids], 4)
        assert dp.pick().rank == 2
        dp.ranks[2].submit([ids], 4)
        assert [ew.load for ew in dp.ranks] == [2, 1, 1]
        assert dp.pick().rank == 1  # tie between ranks 1 and 2
        assert dp.pick(0).rank == 0
    finally:
        dp.close()


@pytest.mark.asyncio
async def test_no_header_avoids_a_busy_rank_and_a_batch_stays_whole() -> None:
    """Over HTTP: while rank 0 serves a long request, one without a header goes to rank 1;
    a batch goes whole to one rank."""
    c = await _client(dp_size=2, speed=20)
    dp = c.app[RANKS_KEY]
    try:
        busy = asyncio.ensure_future(_complete(c, "long " * 50, max_tokens=500, rank="0"))
        while not dp.ranks[0].running:
            await asyncio.sleep(0.001)
        await _complete(c, "a short prompt", max_tokens=2)
        assert dp.ranks[0].running == 1  # still busy: the short one went elsewhere
        await _complete(c, ["batch one", "batch two", "batch three"], max_tokens=2)
        assert dp.ranks[0].running == 1
        await busy
        counts = _by_rank(_samples(await _page(c)), "sglang:num_requests_total", "dp_rank")
        assert counts == {"0": 1.0, "1": 4.0}
    finally:
        await c.close()


# ------------------------------------------------------------------ metrics
@pytest.mark.asyncio
async def test_metrics_are_labelled_per_rank(dp2: TestClient) -> None:
    """Every series appears once per rank with its rank's values: vLLM's families
    labelled engine="r", SGLang's dp_rank="r"; HELP and TYPE once per family."""
    body = await _complete(dp2, ["one prompt", PROMPT], max_tokens=3, rank="1")
    n = body["usage"]["prompt_tokens"]
    busy = asyncio.ensure_future(_complete(dp2, PROMPT, max_tokens=400, rank="0"))
    dp = dp2.app[RANKS_KEY]
    while not dp.ranks[0].running:
        await asyncio.sleep(0.001)
    text = await _page(dp2)
    await busy
    families = list(text_string_to_metric_families(text))
    for line in ("HELP", "TYPE"):
        names = re.findall(rf"^# {line} (\S+) ", text, re.MULTILINE)
        assert len(names) == len(set(names)) == len(families)
    for fam in families:
        label = "engine" if fam.name.startswith("vllm:") else "dp_rank"
        assert fam.name.startswith(("vllm:", "sglang:")), fam.name
        ranks = []
        for sample in fam.samples:
            assert set(sample.labels) - {"block_size", "num_gpu_blocks"} == (
                {label} if fam.name == "vllm:cache_config_info" else {"model_name", label})
            assert sample.labels.get("model_name", "kvroute-emulated") == "kvroute-emulated"
            ranks.append(sample.labels[label])
        assert sorted(ranks) == ["0", "1"], fam.name
    s = _samples(text)  # while rank 0 runs a request
    assert _by_rank(s, "vllm:num_requests_running", "engine") == {"0": 1.0, "1": 0.0}
    assert _by_rank(s, "sglang:num_running_reqs", "dp_rank") == {"0": 1.0, "1": 0.0}
    usage = _by_rank(s, "sglang:token_usage", "dp_rank")
    assert usage["0"] > 0 and usage["1"] == 0
    assert _by_rank(s, "vllm:kv_cache_usage_perc", "engine") == usage
    assert _by_rank(s, "sglang:max_total_num_tokens", "dp_rank") == {"0": CAPACITY,
                                                                    "1": CAPACITY}
    info = {dict(k)["engine"]: dict(k)["num_gpu_blocks"]
            for k in s["vllm:cache_config_info"]}
    assert info == {"0": str(CAPACITY), "1": str(CAPACITY)}
    s = _samples(await _page(dp2))  # after it
    m = (await busy)["usage"]["prompt_tokens"]
    assert _by_rank(s, "vllm:prompt_tokens_total", "engine") == {"0": m, "1": n}
    assert _by_rank(s, "sglang:prompt_tokens_total", "dp_rank") == {"0": m, "1": n}
    assert _by_rank(s, "vllm:generation_tokens_total", "engine") == {"0": 400, "1": 6}
    assert _by_rank(s, "sglang:generation_tokens_total", "dp_rank") == {"0": 400, "1": 6}
    assert _by_rank(s, "vllm:request_success_total", "engine") == {"0": 1, "1": 2}
    assert _by_rank(s, "vllm:prefix_cache_hits_total", "engine") == {"0": 0, "1": 0}
    assert _by_rank(s, "vllm:num_requests_running", "engine") == {"0": 0, "1": 0}


@pytest.mark.asyncio
async def test_one_rank_looks_as_before() -> None:
    """dp_size = 1 (explicit or not): no rank labels, the same page, no dp_size in the
    server info."""
    pages, infos = [], []
    for config in ({}, {"dp_size": 1}):
        c = await _client(**config)
        try:
            await _complete(c, rank="0")
            pages.append(re.sub(r".*_created\{.*\n", "", await _page(c)))
            infos.append(await (await c.get("/get_server_info")).json())
            assert c.app[RANKS_KEY].ranks == [c.app[WORKER_KEY]]
        finally:
            await c.close()
    assert pages[0] == pages[1]
    assert infos[0] == infos[1] and "dp_size" not in infos[0]
    assert "engine=" not in pages[0] and "dp_rank=" not in pages[0]
    for fam in text_string_to_metric_families(pages[0]):
        for s in fam.samples:
            assert set(s.labels) in ({"model_name"}, {"block_size", "num_gpu_blocks"})


# ------------------------------------------------------------------ admin
@pytest.mark.asyncio
async def test_flush_health_models_and_info_cover_every_rank(dp2: TestClient) -> None:
    """/flush_cache clears every rank, or none while any rank is busy; /health is 200;
    /v1/models is as for one rank; the server info gives dp_size."""
    dp = dp2.app[RANKS_KEY]
    for rank in ("0", "1"):
        await _complete(dp2, rank=rank)
    caches = [ew.worker.cache for ew in dp.ranks]
    assert all(cache.total > 0 for cache in caches)
    busy = asyncio.ensure_future(_complete(dp2, "busy " * 30, max_tokens=300, rank="1"))
    while not dp.ranks[1].running:
        await asyncio.sleep(0.001)
    r = await dp2.post("/flush_cache")
    assert r.status == 400
    assert "#running-req: 1" in (await r.json())["error"]["message"]
    assert caches[0].total > 0  # not flushed either
    await busy
    assert (await dp2.post("/flush_cache")).status == 200
    assert all(cache.total == 0 for cache in caches)
    assert (await dp2.get("/health")).status == 200
    data = (await (await dp2.get("/v1/models")).json())["data"]
    assert [(m["id"], m["max_model_len"]) for m in data] == [("kvroute-emulated", CAPACITY)]
    assert (await (await dp2.get("/get_server_info")).json())["dp_size"] == 2


# ------------------------------------------------------------------ configuration
@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "2"])
def test_dp_size_must_be_a_positive_integer(bad: Any) -> None:
    with pytest.raises(ConfigError, match="dp_size"):
        EmulatedConfig(dp_size=bad)


def test_rank_endpoints_are_checked() -> None:
    """Rank r's ports are the configured + r; overlapping live and replay ranges, or a
    port past 65535, are refused when configured."""
    assert rank_endpoint("tcp://127.0.0.1:5557", 0) == "tcp://127.0.0.1:5557"
    assert rank_endpoint("tcp://127.0.0.1:5557", 3) == "tcp://127.0.0.1:5560"
    assert rank_endpoint("tcp://127.0.0.1:*", 3) == "tcp://127.0.0.1:*"
    EmulatedConfig(dp_size=2, kv_events_endpoint="tcp://127.0.0.1:5557",
                   kv_events_replay_endpoint="tcp://127.0.0.1:5559")
    EmulatedConfig(dp_size=4, kv_events_endpoint="tcp://127.0.0.1:*",
                   kv_events_replay_endpoint="tcp://127.0.0.1:*")
    with pytest.raises(ConfigError, match="overlap"):
        EmulatedConfig(dp_size=2, kv_events_endpoint="tcp://127.0.0.1:5557",
                       kv_events_replay_endpoint="tcp://127.0.0.1:5558")
    with pytest.raises(ConfigError, match="65535"):
        EmulatedConfig(dp_size=2, kv_events_endpoint="tcp://127.0.0.1:65535")
    with pytest.raises(ConfigError, match="rank 1"):
        EmulatedConfig(dp_size=2, kv_events_endpoint="tcp://127.0.0.1:abc")


def test_cli_dp_size_flag(capsys: pytest.CaptureFixture[str]) -> None:
    """`kvroute worker --dp-size N` takes an integer >= 1, documented in --help."""
    ap = argparse.ArgumentParser()
    worker_cli.add_parser(ap.add_subparsers())
    assert ap.parse_args(["worker", "--emulate"]).dp_size == 1
    assert ap.parse_args(["worker", "--emulate", "--dp-size", "4"]).dp_size == 4
    for bad in ("0", "-2", "two"):
        with pytest.raises(SystemExit):
            ap.parse_args(["worker", "--emulate", "--dp-size", bad])
        assert "data-parallel ranks is an integer >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        ap.parse_args(["worker", "--help"])
    assert "X-data-parallel-rank" in " ".join(capsys.readouterr().out.split())


# ------------------------------------------------------------------ KV events
def _free_run(n: int) -> int:
    """The first of ``n`` consecutive free loopback ports."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + n > 65535:
            continue
        socks = []
        try:
            for p in range(base, base + n):
                t = socket.socket()
                socks.append(t)
                t.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for t in socks:
                t.close()
    raise RuntimeError("no run of free ports")


def _replayed_ranks(replay: str) -> list[int | None]:
    """The data-parallel rank of every batch a replay socket returns."""
    import zmq

    from kvroute.events import make_decoder
    from kvroute.events.wire import END_OF_REPLAY, pack_seq

    decoder = make_decoder("vllm")
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(replay)
        sock.send_multipart([b"", pack_seq(0)])
        ranks: list[int | None] = []
        while True:
            assert sock.poll(5000), "no replay answer"
            _, seq, payload = sock.recv_multipart()
            if seq == END_OF_REPLAY:
                return ranks
            batch = decoder.decode(payload)
            assert batch is not None and batch.events
            ranks.append(batch.dp_rank)
    finally:
        sock.close()


async def _published(c: TestClient) -> None:
    """Wait until every rank has published what its cache did."""
    for _ in range(1000):
        if all(ew.events is None or ew.events.pending == 0
               for ew in c.app[RANKS_KEY].ranks):
            return
        await asyncio.sleep(0.001)
    raise AssertionError("events stayed pending")


@pytest.mark.asyncio
async def test_each_rank_publishes_on_its_offset_ports() -> None:
    """Rank r binds the configured ports + r and its batches carry data_parallel_rank r,
    live and replayed."""
    pytest.importorskip("zmq")
    pytest.importorskip("msgspec")
    import zmq

    from kvroute.events import make_decoder

    p = _free_run(4)
    c = await _client(dp_size=2, kv_events_endpoint=f"tcp://127.0.0.1:{p}",
                      kv_events_replay_endpoint=f"tcp://127.0.0.1:{p + 2}")
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    try:
        dp = c.app[RANKS_KEY]
        assert dp.kv_event_endpoints == [
            (f"tcp://127.0.0.1:{p + r}", f"tcp://127.0.0.1:{p + 2 + r}") for r in (0, 1)]
        assert [ew.events.dp_rank for ew in dp.ranks] == [0, 1]
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(f"tcp://127.0.0.1:{p + 1}")
        decoder = make_decoder("vllm")
        live: list[int | None] = []
        for k in range(200):  # until the subscription has reached the publisher
            await _complete(c, f"prompt {k}: " + PROMPT, rank="1")
            if sub.poll(20):
                batch = decoder.decode(sub.recv_multipart()[2])
                assert batch is not None
                live.append(batch.dp_rank)
                break
        assert live == [1]
        await _complete(c, "for rank zero: " + PROMPT, rank="0")
        await _published(c)
        assert set(_replayed_ranks(f"tcp://127.0.0.1:{p + 2}")) == {0}
        ranks1 = _replayed_ranks(f"tcp://127.0.0.1:{p + 3}")
        assert ranks1 and set(ranks1) == {1}
    finally:
        sub.close()
        await c.close()


@pytest.mark.asyncio
async def test_free_port_endpoints_give_each_rank_its_own() -> None:
    """With tcp://HOST:* every rank binds free ports of its own, listed in rank order;
    one rank keeps its endpoint and data_parallel_rank 0."""
    pytest.importorskip("zmq")
    pytest.importorskip("msgspec")
    zmq = "tcp://127.0.0.1:*"
    c = await _client(dp_size=3, kv_events_endpoint=zmq, kv_events_replay_endpoint=zmq)
    try:
        dp = c.app[RANKS_KEY]
        eps = dp.kv_event_endpoints
        assert len(eps) == 3
        addresses = [a for pair in eps for a in pair]
        assert len(set(addresses)) == 6 and not any(a.endswith(":*") for a in addresses)
        await _complete(c, rank="2")
        await _published(c)
        assert set(_replayed_ranks(eps[2][1])) == {2}
        assert _replayed_ranks(eps[0][1]) == []
    finally:
        await c.close()
    p = _free_run(1)
    c = await _client(kv_events_endpoint=f"tcp://127.0.0.1:{p}", kv_events_replay_endpoint=zmq)
    try:
        (endpoint, replay), = c.app[RANKS_KEY].kv_event_endpoints
        assert endpoint == f"tcp://127.0.0.1:{p}"
        await _complete(c)
        await _published(c)
        assert set(_replayed_ranks(replay)) == {0}
    finally:
        await c.close()
