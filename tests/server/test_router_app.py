"""The live router (kvroute.server) against small fake engines on real sockets."""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp import web

from kvroute.cli import serve as serve_cli
from kvroute.errors import ConfigError
from kvroute.protocol.response_body import SSEScanner, error_body
from kvroute.routing import make_router_policy
from kvroute.routing.base import Feedback
from kvroute.server.app import RouterApp, ServeConfig, build_app
from kvroute.server.http_messages import Request, StreamResponse
from kvroute.server.proxy import _Relay
from kvroute.workloads.tokenizer import load_tokenizer


class FakeWorker:
    """An OpenAI/SGLang-style engine: ``mode`` ok, fail (500), unhealthy (500 on /health),
    drop (SSE headers, then the connection closes) or midway (one chunk, then it closes)."""

    def __init__(self, mode: str = "ok", chunks: int = 3, delay: float = 0.0,
                 metrics: str | None = None) -> None:
        self.mode, self.chunks, self.delay = mode, chunks, delay
        self.metrics = metrics  # the /metrics page (None: 404)
        self.calls = 0
        self.url = ""
        self.runner: web.AppRunner | None = None

    async def start(self) -> FakeWorker:
        app = web.Application()
        for path in ("/v1/completions", "/v1/chat/completions", "/generate"):
            app.router.add_post(path, self.handle)
        app.router.add_get("/health", self.health)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/metrics", self.metrics_page)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({}, status=500 if self.mode == "unhealthy" else 200)

    async def metrics_page(self, request: web.Request) -> web.Response:
        if self.metrics is None:
            raise web.HTTPNotFound()
        return web.Response(text=self.metrics, content_type="text/plain")

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "fake", "owner": self.url}]})

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.calls += 1
        body = await request.json()
        if self.mode == "fail":
            return web.json_response({"error": "boom"}, status=500)
        usage = {"prompt_tokens": 10, "completion_tokens": self.chunks,
                 "prompt_tokens_details": {"cached_tokens": 7}}
        if not body.get("stream"):
            await asyncio.sleep(self.delay)
            return web.json_response({"id": "x", "worker": self.url, "usage": usage})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        if self.mode in ("drop", "midway"):
            if self.mode == "midway":
                await resp.write(b'data: {"choices": [{"text": "t"}]}\n\n')
                await asyncio.sleep(0.05)
            assert request.transport is not None
            request.transport.close()
            return resp
        for i in range(self.chunks):
            await asyncio.sleep(self.delay)
            chunk = {"choices": [{"text": f"t{i}"}]}
            await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
        final = json.dumps({"choices": [], "usage": usage})
        # split the final event across writes to exercise the SSE line buffer
        await resp.write(f"data: {final[:20]}".encode())
        await resp.write(f"{final[20:]}\n\ndata: [DONE]\n\n".encode())
        await resp.write_eof()
        return resp


def dead_url() -> str:
    """A URL nothing listens on (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@asynccontextmanager
async def cluster(workers: list[FakeWorker | str], policy: str = "lbgr",
                  **cfg: Any) -> AsyncIterator[tuple[aiohttp.ClientSession, RouterApp]]:
    fakes = [w for w in workers if isinstance(w, FakeWorker)]
    for f in fakes:
        await f.start()
    urls = [w.url if isinstance(w, FakeWorker) else w for w in workers]
    cfg.setdefault("health_interval", 0)
    cfg.setdefault("metrics_interval", 0)
    cfg.setdefault("backoff_base", 0.001)
    app = build_app(ServeConfig(worker_urls=urls, **cfg),
                    make_router_policy(policy, seed=0))
    await app.start("127.0.0.1", 0)
    client = aiohttp.ClientSession(base_url=f"http://127.0.0.1:{app.port}")
    try:
        yield client, app
    finally:
        await client.close()
        await app.stop()
        for f in fakes:
            await f.stop()


def in_flight(r: RouterApp) -> list[int]:
    return [s.in_flight for s in r.router.workers]


async def settle(r: RouterApp, timeout: float = 3.0) -> None:
    """Wait until the router has closed every dispatch."""
    for _ in range(int(timeout / 0.02)):
        if not r.router.open_dispatches and not any(in_flight(r)):
            return
        await asyncio.sleep(0.02)


@pytest.mark.asyncio
async def test_non_stream_passthrough_with_headers() -> None:
    """A JSON completion passes through with the worker and prediction headers."""
    a, b = FakeWorker(), FakeWorker()
    async with cluster([a, b]) as (client, r):
        seen = feedback_of(r)
        resp = await client.post("/v1/completions", json={"prompt": "hello world"})
        assert resp.status == 200
        body = await resp.json()
        assert resp.headers["X-Kvroute-Worker"] == body["worker"] in (a.url, b.url)
        assert float(resp.headers["X-Kvroute-Predicted-Ms"]) > 0
        assert body["usage"]["prompt_tokens_details"]["cached_tokens"] == 7
        assert in_flight(r) == [0, 0]
        assert sum(s.completed for s in r.router.workers) == 1
        # 7 of the engine's 10 prompt tokens, in the router's 11 character units
        assert [(fb.cached_tokens, fb.cached_units) for fb in seen] == [(7, 8)]
        m = r.metrics
        assert [sum(s.value for fam in c.collect() for s in fam.samples
                    if s.name.endswith("_total")) for c in (m.hit_reported, m.hit_reported_units,
                                                            m.hit_prompt)] == [7, 8, 11]


def feedback_of(r: Any) -> list[Feedback]:
    """Every Feedback the router's policy gets from now on."""
    seen: list[Feedback] = []
    inner = r.router.policy.on_complete

    def on_complete(fb: Feedback) -> None:
        seen.append(fb)
        inner(fb)

    r.router.policy.on_complete = on_complete
    return seen


@pytest.mark.asyncio
async def test_stream_passthrough_chunks_and_accounting() -> None:
    """SSE chunks reach the client unchanged, and the dispatch closes ok with TTFT."""
    a = FakeWorker(chunks=4)
    async with cluster([a]) as (client, r):
        resp = await client.post("/v1/chat/completions", json={
            "messages": [{"role": "user", "content": "hi"}], "stream": True})
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        assert resp.headers["X-Kvroute-Worker"] == a.url
        seen = feedback_of(r)
        text = (await resp.read()).decode()
        assert text.count("data: ") == 6 and text.rstrip().endswith("data: [DONE]")
        await settle(r)
        assert in_flight(r) == [0]
        assert r.router.workers[0].completed == 1
        # "user\nhi": 7 character units for the engine's 10 tokens, 7 of them cached
        assert [(fb.cached_tokens, fb.cached_units) for fb in seen] == [(7, 5)]


class PausableConn:
    """A client connection stand-in whose writing can be paused."""

    transport = None

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.paused = True

    def head(self, status: int, headers: Any, length: int | None) -> bytes:
        return b"HEAD"

    def send(self, data: bytes) -> None:
        self.sent.append(data)

    async def drain(self) -> None:
        return None

    def is_open(self) -> bool:
        return True

    def writable(self) -> bool:
        return not self.paused


@pytest.mark.asyncio
async def test_relay_declines_chunks_while_the_client_cannot_take_them() -> None:
    """The stream's pass-through takes chunks only while the client's connection takes
    them at once; a read's chunks go out (and are scanned) in one write at its flush,
    with the end of the body when it came in that read."""
    conn = PausableConn()
    resp = StreamResponse(200)
    await resp.prepare(Request(conn, "POST", "/", "", "1.1", []),  # type: ignore[arg-type]
                       b"data: 0\n\n")
    assert conn.sent == [b"HEAD9\r\ndata: 0\n\n\r\n"]
    reader = SSEScanner()
    relay = _Relay(resp, reader)
    assert not relay.take(b"data: 1\n\n")
    relay.flush(False)
    assert len(conn.sent) == 1
    conn.paused = False
    assert relay.take(b"data: 1\n\n") and relay.take(b"data: [DONE]\n\n")
    assert len(conn.sent) == 1 and not reader.done
    relay.flush(True)
    assert conn.sent[1:] == [b"17\r\ndata: 1\n\ndata: [DONE]\n\n\r\n0\r\n\r\n"]
    assert reader.done and resp.finished


def test_request_header_reads_what_headers_holds() -> None:
    """``Request.header`` (no multidict built) gives what ``headers.get`` gives."""
    raw = [(b"Content-Type", b"application/json"), (b"X-Session-ID", b"a\xffb"),
           (b"x-session-id", b"second")]
    req = Request(PausableConn(), "POST", "/", "", "1.1", raw)  # type: ignore[arg-type]
    for name in ("x-session-id", "X-SESSION-ID", "content-type", "absent"):
        assert req.header(name) == req.headers.get(name)
    assert req.header("X-Session-ID") == "a\udcffb"


@pytest.mark.asyncio
@pytest.mark.parametrize("policy", ["cache_aware", "lbgr"])
async def test_repeated_prompt_goes_to_the_same_worker(policy: str) -> None:
    """Cache-aware policies send a repeated long prompt back to the worker that has it."""
    async with cluster([FakeWorker(), FakeWorker()], policy=policy) as (client, _):
        seen = []
        for prompt in ("A" * 2000, "B" * 2000, "A" * 2000 + " more"):
            resp = await client.post("/generate", json={"text": prompt})
            assert resp.status == 200
            seen.append(resp.headers["X-Kvroute-Worker"])
        assert seen[0] == seen[2]
        if policy == "cache_aware":  # a miss goes to the smallest tree: the other worker
            assert seen[1] != seen[0]


@pytest.mark.asyncio
async def test_retry_on_500_goes_to_another_worker() -> None:
    """A 500 before streaming is retried on the other worker, which answers."""
    bad, good = FakeWorker("fail"), FakeWorker()
    async with cluster([bad, good], max_retries=2) as (client, r):
        resp = await client.post("/v1/completions", json={"prompt": "x", "stream": True})
        assert resp.status == 200
        assert resp.headers["X-Kvroute-Worker"] == good.url
        await resp.read()
        assert (bad.calls, good.calls) == (1, 1)
        await settle(r)
        assert in_flight(r) == [0, 0]
        assert [s.errors for s in r.router.workers] == [1, 0]
        metrics = await (await client.get("/metrics")).text()
        assert "kvroute_retries_total 1.0" in metrics
        # the prompt never reached the failing worker: the index does not credit it there
        units = r.prompts.units("completions", {"prompt": "x"})
        assert r.router.index is not None
        assert r.router.index.match(units).tolist() == [0, 1]


@pytest.mark.asyncio
async def test_index_forgets_a_worker_whose_breaker_opens() -> None:
    """A worker that went down may come back with an empty cache: its beliefs are dropped."""
    async with cluster([FakeWorker(), FakeWorker()], policy="cache_aware",
                       failure_threshold=1) as (client, r):
        body = {"prompt": "hello world", "max_tokens": 1}
        assert (await client.post("/v1/completions", json=body)).status == 200
        units, idx = r.prompts.units("completions", body), r.router.index
        assert idx is not None
        held = idx.match(units)
        k = int(np.argmax(held))
        assert held[k] == len(units) and held[1 - k] == 0
        assert r.members.record_failure(r.members.workers[k], r.now())
        assert idx.match(units).tolist() == [0, 0] and idx.sizes().tolist() == [0, 0]


@pytest.mark.asyncio
async def test_upstream_drop_before_first_chunk_retries_midway_ends_with_error() -> None:
    """A stream lost before its first byte is retried elsewhere; one lost midway ends
    with an SSE error event (the protocol's error body, with its code); nothing stays in
    flight."""
    drop, good = FakeWorker("drop"), FakeWorker()
    async with cluster([drop, good]) as (client, r):
        resp = await client.post("/v1/completions", json={"prompt": "x", "stream": True})
        assert resp.status == 200 and resp.headers["X-Kvroute-Worker"] == good.url
        assert (await resp.read()).rstrip().endswith(b"[DONE]")
        assert (drop.calls, good.calls) == (1, 1)
        await settle(r)
        assert in_flight(r) == [0, 0]
    midway = FakeWorker("midway")
    async with cluster([midway]) as (client, r):
        resp = await client.post("/v1/completions", json={"prompt": "x", "stream": True})
        text = (await resp.read()).decode()
        assert text.startswith("data: ") and "failed mid-stream" in text
        event = json.loads(text.rstrip().rsplit("\n", 1)[-1].removeprefix("data: "))
        assert event == error_body(f"worker {midway.url} failed mid-stream: UpstreamError",
                                   "upstream_error", 502)
        await settle(r)
        assert in_flight(r) == [0] and r.router.workers[0].errors == 1


@pytest.mark.asyncio
async def test_in_flight_zero_after_upstream_errors() -> None:
    """Upstream 500s and refused connections close every dispatch as failed."""
    async with cluster([FakeWorker("fail"), dead_url()], max_retries=1,
                       failure_threshold=5) as (client, r):
        for _ in range(3):
            resp = await client.post("/v1/completions", json={"prompt": "p"})
            assert resp.status in (500, 502)
            assert "error" in await resp.json()
        assert in_flight(r) == [0, 0]
        assert sum(s.errors for s in r.router.workers) == 6
        assert not r.router.open_dispatches


@pytest.mark.asyncio
async def test_client_disconnect_mid_stream_closes_dispatch(tmp_path: Any) -> None:
    """A client that hangs up mid-stream leaves nothing in flight (closed not ok)."""
    log = tmp_path / "d.jsonl"
    slow = FakeWorker(chunks=200, delay=0.01)
    async with cluster([slow], decision_log=str(log)) as (client, r):
        resp = await client.post("/v1/completions", json={"prompt": "p", "stream": True})
        assert resp.status == 200
        await resp.content.readany()
        assert in_flight(r) == [1]
        resp.close()
        await settle(r)
        assert in_flight(r) == [0]
        assert r.router.workers[0].errors == 1
    outcome = [json.loads(x) for x in log.read_text().splitlines()][-1]
    assert outcome["event"] == "outcome" and outcome["ok"] is False
    assert outcome["error"] == "client_disconnect"


@pytest.mark.asyncio
async def test_503_when_all_workers_are_down() -> None:
    """Dead workers open their breakers; then requests get a clear 503 JSON error."""
    async with cluster([dead_url(), dead_url()], failure_threshold=1,
                       cooldown_s=60) as (client, r):
        first = await client.post("/v1/completions", json={"prompt": "p"})
        assert first.status == 502
        assert (await client.get("/readiness")).status == 503
        resp = await client.post("/v1/completions", json={"prompt": "p"})
        assert resp.status == 503
        err = (await resp.json())["error"]
        assert err["type"] == "service_unavailable" and "healthy" in err["message"]
        assert (await client.get("/v1/models")).status == 503
        assert in_flight(r) == [0, 0]


@pytest.mark.asyncio
async def test_unavailable_workers_are_masked_not_cancelled() -> None:
    """A worker whose breaker is open is never offered to the policy: it picks among the
    others, and hears one completion per dispatch, none for a refused pick."""
    good = FakeWorker()
    async with cluster([dead_url(), good, dead_url()], failure_threshold=1,
                       cooldown_s=60) as (client, r):
        heard: list[int] = []
        on_complete = r.router.policy.on_complete
        r.router.policy.on_complete = lambda fb: (heard.append(fb.rid),  # type: ignore
                                                  on_complete(fb))
        for i in range(8):
            resp = await client.post("/v1/completions", json={"prompt": f"p{i}" * 50})
            assert resp.status == 200 and resp.headers["X-Kvroute-Worker"] == good.url
        await settle(r)
        states = r.router.workers
        assert [s.completed for s in states] == [0, 8, 0]
        assert states[0].errors + states[2].errors <= 2  # a dead one is tried at most once
        assert len(heard) == len(set(heard)) == sum(s.routed for s in states) \
            == sum(s.completed + s.errors for s in states)
        assert not r.router.policy._pending  # type: ignore[attr-defined]  # lbgr's


@pytest.mark.asyncio
async def test_breaker_and_health_checks() -> None:
    """Failures open the breaker; a passing health check after the cool-down restores it,
    and failing health checks take a worker out."""
    w = FakeWorker("fail")
    async with cluster([w], failure_threshold=1, cooldown_s=0.05, max_retries=0) as (client, r):
        assert (await client.post("/generate", json={"text": "p"})).status == 500
        assert (await client.get("/readiness")).status == 503
        await asyncio.sleep(0.06)
        r.members.health_checks = True
        w.mode = "unhealthy"
        await r.checks.check_health()
        assert (await client.get("/readiness")).status == 503
        w.mode = "ok"
        await r.checks.check_health()
        assert (await client.get("/readiness")).status == 200
        assert (await client.post("/generate", json={"text": "p"})).status == 200


@pytest.mark.asyncio
async def test_admin_add_remove_with_and_without_api_key() -> None:
    """The admin API needs the bearer key; add/remove keep the router consistent."""
    a, b, c = FakeWorker(), FakeWorker(), FakeWorker()
    await b.start()
    await c.start()
    auth = {"Authorization": "Bearer s3cret"}
    try:
        async with cluster([a], api_key="s3cret") as (client, r):
            assert (await client.get("/workers")).status == 401
            resp = await client.post("/workers", json={"url": b.url},
                                     headers={"Authorization": "Bearer wrong"})
            assert resp.status == 401
            assert (await client.post("/workers", json={"url": b.url}, headers=auth)).status \
                == 200
            assert (await client.post("/workers", json={"url": b.url}, headers=auth)).status \
                == 409
            assert (await client.post(f"/add_worker?url={c.url}", headers=auth)).status == 200
            urls = [w["url"] for w in (await (await client.get(
                "/workers", headers=auth)).json())["workers"]]
            assert urls == [a.url, b.url, c.url]
            for i in range(6):
                resp = await client.post("/v1/completions", json={"prompt": f"{i}" * 500})
                assert resp.status == 200
            assert (await client.delete(f"/workers?url={b.url}", headers=auth)).status == 200
            assert (await client.post(f"/remove_worker?url={a.url}", headers=auth)).status \
                == 200
            assert (await client.delete("/workers", json={"url": a.url},
                                        headers=auth)).status == 404
            assert [w.url for w in r.members.workers] == [c.url]
            assert len(r.router.workers) == 1
            r.router.index.check_integrity()  # type: ignore[union-attr]
            resp = await client.post("/v1/completions", json={"prompt": "after"})
            assert resp.headers["X-Kvroute-Worker"] == c.url
            assert in_flight(r) == [0]
    finally:
        await b.stop()
        await c.stop()


@pytest.mark.asyncio
async def test_removing_a_worker_mid_stream_closes_its_dispatch_once() -> None:
    """A worker removed while streaming: its dispatch closes once, the stream still ends."""
    a, slow = FakeWorker(), FakeWorker(chunks=20, delay=0.01)
    async with cluster([a, slow], policy="round_robin") as (client, r):
        await (await client.post("/v1/completions", json={"prompt": "x"})).read()
        resp = await client.post("/v1/completions", json={"prompt": "y", "stream": True})
        assert resp.headers["X-Kvroute-Worker"] == slow.url
        assert (await client.post(f"/remove_worker?url={slow.url}")).status == 200
        assert (await client.post(f"/remove_worker?url={a.url}")).status == 200
        assert in_flight(r) == [] and not r.router.open_dispatches
        assert (await resp.read()).rstrip().endswith(b"[DONE]")
        assert (await client.post("/v1/completions", json={"prompt": "z"})).status == 503
        assert (await client.post(f"/add_worker?url={a.url}")).status == 200
        assert (await client.post("/v1/completions", json={"prompt": "z"})).status == 200
        assert in_flight(r) == [0]


@pytest.mark.asyncio
async def test_metrics_and_decision_log(tmp_path: Any) -> None:
    """/metrics has the router's counters; the decision log has decision and outcome lines."""
    log = tmp_path / "d.jsonl"
    w = FakeWorker()
    async with cluster([w], decision_log=str(log)) as (client, _):
        await (await client.post("/v1/completions", json={"prompt": "abc"})).read()
        await (await client.post("/v1/completions", json={"prompt": "abc", "stream": True})).read()
        text = await (await client.get("/metrics")).text()
    for name in ('kvroute_requests_total{route="completions"} 2.0',
                 f'kvroute_routing_decisions_total{{branch="min_predicted",worker="{w.url}"}}',
                 f'kvroute_worker_in_flight{{worker="{w.url}"}} 0.0',
                 "kvroute_e2e_seconds_count 2.0", "kvroute_ttft_seconds_count 1.0",
                 "kvroute_predicted_latency_seconds_count 2.0",
                 "kvroute_prediction_error_seconds_count 2.0",
                 "kvroute_estimated_hit_ratio_count 2.0",
                 "kvroute_engine_cached_tokens_total 14.0"):
        assert name in text, name
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert [x["event"] for x in lines] == ["decision", "outcome"] * 2
    d, o = lines[2], lines[3]
    assert d["worker"] == w.url and d["units"] == 3 and d["matched"] == {w.url: 3}
    assert d["in_flight"] == {w.url: 1} and d["predicted_s"] > 0
    assert o["ok"] and o["cached_tokens"] == 7 and o["ttft_s"] <= o["e2e_s"]


@pytest.mark.asyncio
async def test_metrics_show_the_learned_policys_prediction_error() -> None:
    """With ``learned``, /metrics carries its predicted-vs-observed TTFT and E2E error."""
    w = FakeWorker()
    async with cluster([w], policy="learned") as (client, _):
        await (await client.post("/v1/completions", json={"prompt": "abc"})).read()
        await (await client.post("/v1/completions", json={"prompt": "abd", "stream": True})
               ).read()  # only a streamed reply has a TTFT
        text = await (await client.get("/metrics")).text()
    for name in ('kvroute_policy_telemetry{key="ttft.count"} 1.0',
                 'kvroute_policy_telemetry{key="e2e.count"} 2.0',
                 'kvroute_policy_telemetry{key="e2e.mean_abs_error_s"}',
                 'kvroute_policy_telemetry{key="e2e.abs_error_sum_s"}',  # for windows
                 'kvroute_policy_telemetry{key="hit_realisation"}',
                 'kvroute_policy_telemetry{key="ttft_coefficients.2"}',  # a list's items
                 # "abd" was routed with "ab" believed cached: learned in its prefix's age
                 # bucket (the bucket depends on the real time between the two requests)
                 'kvroute_policy_telemetry{key="hit_realisation_by_age.'):
        assert name in text, name


@pytest.mark.asyncio
async def test_bad_client_input_is_a_400_json_error() -> None:
    """Invalid JSON or a missing prompt give 400 {"error": {...}}, unknown paths 404 JSON."""
    w = FakeWorker()
    async with cluster([w]) as (client, r):
        for path, data in (("/v1/completions", b"{nope"), ("/v1/completions", b"[1]"),
                           ("/v1/completions", b"{}"), ("/v1/chat/completions", b'{"x": 1}'),
                           ("/generate", b'{"sampling_params": {}}'),
                           ("/v1/chat/completions", b'{"messages": [{"role": "user"}]}')):
            resp = await client.post(path, data=data)
            if path == "/v1/chat/completions" and b"role" in data:
                assert resp.status == 200  # without a tokenizer, messages are keyed as JSON
                continue
            assert resp.status == 400, (path, data)
            err = (await resp.json())["error"]
            assert err["type"] == "invalid_request_error" and err["message"]
        resp = await client.get("/nowhere")
        assert resp.status == 404 and "error" in await resp.json()
        resp = await client.get("/generate")
        assert resp.status == 405 and "error" in await resp.json()
        assert (await client.head("/health")).status == 405
        assert (await client.head("/nowhere")).status == 404
        assert w.calls == 1 and in_flight(r) == [0]


@pytest.mark.asyncio
async def test_health_liveness_models_and_graceful_drain() -> None:
    """Probes answer; /v1/models comes from a worker; draining refuses new requests but
    lets the one in flight finish."""
    w = FakeWorker(chunks=10, delay=0.02)
    async with cluster([w]) as (client, r):
        assert (await client.get("/health")).status == 200
        assert (await client.get("/liveness")).status == 200
        assert (await client.get("/readiness")).status == 200
        models = await (await client.get("/v1/models")).json()
        assert models["data"][0]["owner"] == w.url
        resp = await client.post("/v1/completions", json={"prompt": "p", "stream": True})
        drain = asyncio.create_task(r._on_shutdown())
        await asyncio.sleep(0.01)
        assert (await client.get("/readiness")).status == 503
        assert (await client.post("/v1/completions", json={"prompt": "p"})).status == 503
        assert not drain.done()
        assert (await resp.read()).rstrip().endswith(b"[DONE]")
        await asyncio.wait_for(drain, 2)
        assert in_flight(r) == [0]


def test_routing_units_chars_tokens_and_ids() -> None:
    """Units: characters (chat as role and content), token ids with a tokenizer, ids as given."""
    msgs = [{"role": "user", "content": "héllo"}]
    r = RouterApp(ServeConfig(worker_urls=["http://a:1"]), make_router_policy("random"))
    units = r.prompts.units("chat", {"messages": msgs})
    assert "".join(map(chr, units)) == "user\nhéllo"
    assert r.prompts.units("generate", {"text": "ab"}).tolist() == [97, 98]
    assert r.prompts.units("generate", {"input_ids": [5, 6]}).tolist() == [5, 6]
    assert r.prompts.units("completions", {"prompt": [[1, 2], [3]]}).tolist() == [1, 2]
    assert r.prompts.units("completions", {"prompt": ["xy", "z"]}).tolist() == [120, 121]
    tok = load_tokenizer(None)
    rt = RouterApp(ServeConfig(worker_urls=["http://a:1"], tokenizer=tok),
                   make_router_policy("random"))
    assert np.array_equal(rt.prompts.units("completions", {"prompt": "hello world"}),
                          tok.encode("hello world"))


def test_serve_cli_rejects_bad_configuration() -> None:
    """`kvroute serve` errors are ConfigErrors (one line), raised before any socket opens."""
    ap = argparse.ArgumentParser()
    serve_cli.add_parser(ap.add_subparsers())
    for argv, needle in ((["serve", "--worker-urls", "ftp://x"], "http://"),
                         (["serve", "--worker-urls", "http://a:1", "--policy", "nope"],
                          "unknown routing policy"),
                         (["serve", "--worker-urls", "http://a:1", "--policy", "random",
                           "--cache-threshold", "0.3"], "does not take"),
                         (["serve", "--worker-urls", "http://a:1", "http://a:1/"], "duplicate"),
                         (["serve", "--worker-urls", "http://a:1", "--lora-adapters", ""],
                          "must not be empty")):
        args = ap.parse_args(argv)
        with pytest.raises(ConfigError, match=needle):
            args.func(args)


SGLANG_PAGE = """# HELP sglang:num_running_reqs Running requests
# TYPE sglang:num_running_reqs gauge
sglang:num_running_reqs{model_name="m"} 5.0
sglang:num_queue_reqs{model_name="m"} 2.0
sglang:token_usage{model_name="m"} 0.25
sglang:max_total_num_tokens{model_name="m"} 100000.0
"""


@pytest.mark.asyncio
async def test_engine_load_is_scraped_into_worker_state(caplog: pytest.LogCaptureFixture) -> None:
    busy, silent = FakeWorker(metrics=SGLANG_PAGE), FakeWorker()
    async with cluster([busy, silent], policy="llmd") as (client, rt):
        await rt.checks.scrape_engines()
        await rt.checks.scrape_engines()  # the worker without /metrics is warned about once
        states = rt.router.workers
        assert (states[0].running, states[0].waiting) == (5, 2)
        assert states[0].kv_usage == pytest.approx(0.25)
        assert states[0].kv_capacity == 100_000
        assert (states[1].running, states[1].waiting, states[1].kv_usage) == (0, 0, 0.0)
        warnings = [r for r in caplog.records if "engine load" in r.getMessage()]
        assert len(warnings) == 1 and silent.url in warnings[0].getMessage()
        listed = (await (await client.get("/workers")).json())["workers"]
        assert listed[0]["engine"] == {"running": 5, "waiting": 2, "kv_usage": 0.25,
                                       "kv_capacity": 100_000, "max_running": 0}
        # llmd's queue scorer now sees worker 0 busy: the idle one is chosen
        r = await client.post("/v1/completions", json={"prompt": "hello", "max_tokens": 1})
        assert r.headers["X-Kvroute-Worker"] == silent.url


@pytest.mark.asyncio
async def test_the_engines_cap_on_running_requests_reaches_worker_state() -> None:
    """SGLang's page says its cap; for an engine whose page does not (vLLM), ``serve
    --max-running`` says it."""
    capped = FakeWorker(metrics=SGLANG_PAGE + 'sglang:max_running_requests{model_name="m"} 48\n')
    vllm = FakeWorker(metrics='vllm:num_requests_running{model_name="m"} 3\n'
                              'vllm:num_requests_waiting{model_name="m"} 0\n')
    async with cluster([capped, vllm], policy="learned", max_running=32) as (_, rt):
        await rt.checks.scrape_engines()
        assert [s.max_running for s in rt.router.workers] == [48, 32]
    async with cluster([vllm], policy="learned") as (_, rt):
        await rt.checks.scrape_engines()
        assert rt.router.workers[0].max_running == 0
    with pytest.raises(ConfigError, match="--max-running"):
        ServeConfig(worker_urls=["http://a:1"], max_running=0).validate()


def test_chat_units_use_the_models_own_chat_template(tmp_path: Any) -> None:
    """With a tokenizer_config.json beside the tokenizer, chat goes through its template;
    a template error is a 400-worthy BadRequest."""
    pytest.importorskip("jinja2")
    from kvroute.protocol.request_body import BadRequest
    from kvroute.workloads.chat_template import find_chat_template

    (tmp_path / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": {"content": "<s>"}, "eos_token": "</s>",
        "chat_template": "{{ bos_token }}{% for m in messages %}"
                         "{% if m.role == 'tool' %}{{ raise_exception('no tools') }}{% endif %}"
                         "[{{ m.role }}] {{ m.content }}\n{% endfor %}"
                         "{% if add_generation_prompt %}[assistant]{% endif %}"}))
    template = find_chat_template(tmp_path / "tokenizer.json")
    assert template is not None
    msgs = [{"role": "user", "content": "hi"}]
    assert template.render(msgs) == "<s>[user] hi\n[assistant]"
    tok = load_tokenizer(None)
    r = RouterApp(ServeConfig(worker_urls=["http://a:1"], tokenizer=tok, chat_template=template),
                  make_router_policy("random"))
    assert np.array_equal(r.prompts.units("chat", {"messages": msgs}),
                          tok.encode("<s>[user] hi\n[assistant]"))
    with pytest.raises(BadRequest, match="no tools"):
        r.prompts.units("chat", {"messages": [{"role": "tool", "content": "x"}]})
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "</s>"}))
    assert find_chat_template(tmp_path / "tokenizer.json") is None
