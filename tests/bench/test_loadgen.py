"""kvroute bench against a fake OpenAI/SGLang server on a real socket."""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import socket

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, generate_latest

from kvroute.bench.client import http_request
from kvroute.bench.config import BenchConfig
from kvroute.bench.loadgen import run_bench, run_workload
from kvroute.bench.scrape import cache_counters, metrics_hit_rate
from kvroute.bench.summary import summarize
from kvroute.cli import bench as bench_cli
from kvroute.errors import ConfigError
from kvroute.workloads.catalog import build_workload
from kvroute.workloads.request import OpenLoop, Request


class FakeServer:
    """Streams ``tokens`` SSE chunks per request (``first`` s, then ``gap`` s apart), a usage
    chunk with cached tokens (half the prompt when its first words were seen before) and
    ``[DONE]``; serves SGLang counters on /metrics; fails the rids it is told to."""

    def __init__(self, first: float = 0.0, gap: float = 0.0, tokens: int = 2) -> None:
        self.first, self.gap, self.tokens = first, gap, tokens
        self.fail_500: set[int] = set()
        self.drop: set[int] = set()
        self.slow: dict[int, float] = {}
        self.active = self.max_active = self.served = 0
        self.received: list[int] = []  # rids, in the order their requests came in
        self.seen: set[str] = set()
        self.registry = CollectorRegistry()
        self.cached = Counter("sglang:cached_tokens", "cached", ["model_name"],
                              registry=self.registry).labels("fake")
        self.prompt = Counter("sglang:prompt_tokens", "prompt", ["model_name"],
                              registry=self.registry).labels("fake")
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def __aenter__(self) -> FakeServer:
        async def health(request: web.Request) -> web.Response:
            return web.Response(text="ok")

        async def models(request: web.Request) -> web.Response:
            return web.json_response({"data": [{"id": "fake-model"}]})

        async def metrics(request: web.Request) -> web.Response:
            return web.Response(body=generate_latest(self.registry), content_type="text/plain")

        app = web.Application()
        app.router.add_get("/health", health)
        app.router.add_get("/v1/models", models)
        app.router.add_get("/metrics", metrics)
        for path in ("/v1/completions", "/v1/chat/completions", "/generate"):
            app.router.add_post(path, self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.runner is not None
        await self.runner.cleanup()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        rid = int(request.headers["X-Request-Id"])
        self.received.append(rid)
        body = await request.json()
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            if rid in self.fail_500:
                return web.Response(status=500, text="boom")
            p = body.get("prompt") or body.get("input_ids") or body.get("text")
            text = (" ".join(map(str, p)) if isinstance(p, list)
                    else p or json.dumps(body.get("messages")))
            words = text.split()
            prompt, key = len(words), " ".join(words[:8])
            cached = prompt // 2 if key in self.seen else 0
            self.seen.add(key)
            worker = f"w{self.served % 2}"
            self.served += 1
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                               "X-Kvroute-Worker": worker})
            await resp.prepare(request)
            await asyncio.sleep(self.first + self.slow.get(rid, 0.0))
            for k in range(self.tokens):
                if k:
                    await asyncio.sleep(self.gap)
                if rid in self.drop:
                    assert request.transport is not None
                    request.transport.close()
                    return resp
                if request.path == "/v1/chat/completions":
                    chunk = {"choices": [{"index": 0, "delta": {"content": f" t{k}"}}]}
                else:
                    chunk = {"choices": [{"index": 0, "text": f" t{k}"}]}
                await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
            usage = {"prompt_tokens": prompt, "completion_tokens": self.tokens,
                     "prompt_tokens_details": {"cached_tokens": cached}}
            self.prompt.inc(prompt)
            self.cached.inc(cached)
            await resp.write(f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n"
                             .encode())
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
            return resp
        finally:
            self.active -= 1


def gsp(**options: object) -> OpenLoop:
    wl = build_workload("gsp", 1, groups=3, prompts_per_group=4, **options)
    assert isinstance(wl, OpenLoop)
    return wl


class VirtualClock:
    """Time that moves only when the load generator sleeps, after the requests it has
    started have left (they run before the sleeping driver resumes)."""

    def __init__(self) -> None:
        self.t = 0.0
        self.wakeups: list[float] = []

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(0)
        self.t += seconds
        self.wakeups.append(self.t)


@pytest.mark.asyncio
async def test_open_loop_sends_at_arrival_times():
    """Open loop: each request leaves at its (rebased) arrival time, in arrival order: the
    driver sleeps until each next arrival and no longer (on a virtual clock, so a loaded
    machine cannot make it late)."""
    wl = gsp(rate=60.0)
    arrivals = [r.arrival for r in wl]
    clock = VirtualClock()
    async with FakeServer() as srv:
        run = await run_workload(wl, BenchConfig(srv.url), clock=clock)
    assert len(run.results) == 12 and run.mode == "open" and run.unsent == 0
    by_rid = {r.rid: r for r in run.results}
    sent = []
    for req in wl:
        res = by_rid[req.rid]
        assert res.scheduled == pytest.approx(req.arrival - arrivals[0])
        assert res.sent == pytest.approx(res.scheduled)
        sent.append(res.sent)
    assert sent == sorted(sent)
    later = sorted({a - arrivals[0] for a in arrivals} - {0.0})
    assert clock.wakeups == pytest.approx(later)
    assert sorted(srv.received) == sorted(by_rid)


@pytest.mark.asyncio
async def test_closed_loop_never_exceeds_concurrency():
    """Closed loop: at most N requests in flight; each session's turns wait for replies."""
    wl = build_workload("sharegpt", 1, clients=6, turns=(3,), user_tokens=16)
    async with FakeServer(first=0.01) as srv:
        run = await run_workload(wl, BenchConfig(srv.url, concurrency=2))
        assert srv.max_active == 2
        pulled = await run_workload(gsp(), BenchConfig(srv.url, concurrency=3))
        assert srv.max_active == 3
    assert len(run.results) == 18 and all(r.ok and r.api == "chat" for r in run.results)
    assert run.mode == "closed" and run.concurrency == 2
    for s in range(6):
        turns = sorted((r for r in run.results if r.session == s), key=lambda r: r.turn)
        assert [r.turn for r in turns] == [0, 1, 2]
        assert all(b.sent >= a.finish for a, b in itertools.pairwise(turns))
    assert pulled.mode == "open-concurrency" and len(pulled.results) == 12


@pytest.mark.asyncio
async def test_ttft_below_e2e_and_summary():
    """TTFT is the first content chunk, E2E the [DONE]; the summary uses usage counts."""
    wl = gsp(rate=float("inf"), output_len=5)
    async with FakeServer(first=0.02, gap=0.02, tokens=5) as srv:
        run = await run_workload(wl, BenchConfig(srv.url, requests=5), model="m")
    assert len(run.results) == 5 and run.unsent == 0
    for r in run.results:
        assert r.ok and r.usage and r.output_tokens == 5 and r.worker in ("w0", "w1")
        assert 0.015 < r.ttft < r.e2e and r.e2e - r.ttft > 0.06
    s = summarize(run, "gsp", srv.url)
    assert s["requests_ok"] == 5 and s["requests_failed"] == 0 and s["output_tokens"] == 25
    assert s["ttft_s"]["p50"] < s["e2e_s"]["p50"] <= s["e2e_s"]["max"]
    assert s["tpot_s"]["mean"] == pytest.approx(0.02, abs=0.015)
    assert s["throughput_rps"] > 0 and s["hit_rate_cluster"] is None
    assert sorted(w["requests"] for w in s["per_worker"]) == [2, 3]


@pytest.mark.asyncio
async def test_cluster_hit_rate_from_metrics_deltas():
    """The cluster hit rate is the counters' increase over the run, matching usage."""
    wl = gsp(rate=float("inf"), order="grouped")
    async with FakeServer() as srv:
        srv.prompt.inc(1000)  # traffic before the run must not count
        srv.cached.inc(900)
        run = await run_bench(wl, BenchConfig(srv.url, metrics_urls=(srv.url,)))
        prompt, cached = srv.prompt._value.get() - 1000, srv.cached._value.get() - 900
    assert run.model == "fake-model" and cached > 0
    s = summarize(run, "gsp", srv.url)
    assert s["hit_rate_cluster"] == pytest.approx(cached / prompt)
    assert s["hit_rate_client"] == pytest.approx(cached / prompt)
    assert s["hit_rate"] == s["hit_rate_cluster"]  # the same key as kvroute sim
    assert s["cluster"]["per_url"][0]["engine"] == "sglang"


def test_counter_names_with_and_without_total():
    """vLLM/SGLang counters parse whether or not the family is typed (``_total``)."""
    typed = ("# TYPE vllm:prefix_cache_hits counter\nvllm:prefix_cache_hits_total{a=\"1\"} 3\n"
             "vllm:prefix_cache_hits_total{a=\"2\"} 2\nvllm:prefix_cache_hits_created 17\n")
    untyped = "vllm:prefix_cache_queries_total 20\nother_total 1\n"
    got = cache_counters(typed + untyped)
    assert got == {"vllm:prefix_cache_hits": 5.0, "vllm:prefix_cache_queries": 20.0}
    after = {"u": {"vllm:prefix_cache_hits": 15.0, "vllm:prefix_cache_queries": 40.0},
             "bad": "HTTP 404"}
    r = metrics_hit_rate({"u": got, "bad": "HTTP 404"}, after)
    assert r["hit_rate"] == pytest.approx(0.5)
    assert [p.get("error") for p in r["per_url"]] == ["HTTP 404", None]


@pytest.mark.asyncio
async def test_failures_are_counted_not_lost():
    """HTTP 500, a dropped connection and a timeout each give a failed row with a reason."""
    wl = gsp(rate=float("inf"))
    async with FakeServer(gap=0.01, tokens=3) as srv:
        srv.fail_500, srv.drop, srv.slow = {1, 2}, {4}, {6: 0.5}
        run = await run_workload(wl, BenchConfig(srv.url, timeout=0.2))
    assert sorted(r.rid for r in run.results) == list(range(12))
    reasons = {r.rid: r.reason for r in run.results if not r.ok}
    assert reasons.keys() == {1, 2, 4, 6}
    assert reasons[1] == reasons[2] == "HTTP 500" and reasons[6] == "timeout"
    assert reasons[4] is not None and reasons[4].startswith("connection")
    s = summarize(run)
    assert s["requests_ok"] == 8 and s["requests_failed"] == 4
    assert s["failures"]["HTTP 500"] == 2


def _main(argv: list[str]) -> int:
    """``kvroute.cli.main`` with the bench subcommand registered (if the lead has not yet)."""
    from kvroute import cli

    original = cli.build_parser

    def build() -> argparse.ArgumentParser:
        ap = original()
        sub = next(a for a in ap._actions if isinstance(a, argparse._SubParsersAction))
        if "bench" not in sub.choices:
            bench_cli.add_parser(sub)
        return ap

    cli.build_parser = build
    try:
        return cli.main(argv)
    finally:
        cli.build_parser = original


@pytest.mark.asyncio
async def test_cli_end_to_end_with_json(tmp_path, capsys):
    """`kvroute bench` prints the tables and failures, writes JSON, exits 0."""
    out = tmp_path / "b.json"
    async with FakeServer() as srv:
        srv.fail_500 = {3}
        rc = await asyncio.to_thread(_main, [
            "bench", "--url", srv.url, "--groups", "2", "--prompts-per-group", "4",
            "--rate", "200", "--output-len", "2", "--requests", "6", "--metrics-url", srv.url,
            "--json", str(out), "--workers", "2"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "hit rate (cluster)" in text and "TTFT" in text
    # told the workers behind the URL, it says what load the 6 requests it sends offer
    assert "arrivals as given: 6 requests over" in " ".join(text.split())
    assert "offered load" in text
    assert "1 of 6 requests failed" in text and "rid 3" in text
    data = json.loads(out.read_text())
    s = data["summary"]
    assert s["requests_sent"] == 6 == len(data["requests"]) and s["requests_failed"] == 1
    assert s["model"] == "fake-model" and s["hit_rate_cluster"] is not None
    assert {r["rid"] for r in data["requests"]} == set(range(6))


def test_unreachable_url_exits_2(capsys):
    """An endpoint that does not answer is a one-line error and exit code 2."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert _main(["bench", "--url", f"http://127.0.0.1:{port}", "--groups", "1",
                  "--prompts-per-group", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("kvroute: error: cannot use") and "\n" not in err


def test_cli_api_choices_match_loadgen():
    """The command line offers exactly the APIs the load generator speaks."""
    from kvroute.protocol.request_body import APIS

    assert bench_cli.APIS == APIS


def test_request_bodies_per_api():
    """Token prompts go to completions as token ids, chat turns as messages, generate
    with sampling_params; all greedy, ignore_eos, streamed."""
    import numpy as np

    req = Request(7, np.array([1, 2, 3]), 4)
    path, body = http_request(req, "completions", "m")
    assert path == "/v1/completions" and body["prompt"] == [1, 2, 3]
    assert body["max_tokens"] == 4 and body["ignore_eos"] and body["temperature"] == 0
    assert body["stream"] and body["stream_options"] == {"include_usage": True}
    chat = Request(8, np.array([1]), 2, messages=[{"role": "user", "content": "hi"}])
    path, body = http_request(chat, "chat", "m")
    assert path == "/v1/chat/completions" and body["messages"][0]["content"] == "hi"
    path, body = http_request(chat, "generate", None)
    assert path == "/generate" and "hi" in body["text"] and body["stream"]
    assert body["sampling_params"] == {"max_new_tokens": 2, "temperature": 0,
                                       "ignore_eos": True}
    path, body = http_request(req, "generate", None)
    assert body["input_ids"] == [1, 2, 3] and "text" not in body


def test_request_bodies_without_the_exact_output():
    """--max-tokens none or N: the output goes as the minimum, without ignore_eos, beside
    no max_tokens or a cap of at least the output; bad values are refused."""
    import numpy as np

    req = Request(7, np.array([1, 2, 3]), 40)
    _, body = http_request(req, "completions", "m", "none")
    assert body["min_tokens"] == 40 and "max_tokens" not in body and "ignore_eos" not in body
    _, body = http_request(req, "chat", "m", "1024")
    assert (body["min_tokens"], body["max_tokens"]) == (40, 1024)
    _, body = http_request(req, "completions", "m", "16")  # a cap below the output: raised
    assert (body["min_tokens"], body["max_tokens"]) == (40, 40)
    _, body = http_request(req, "generate", None, "1024")
    assert body["sampling_params"] == {"min_new_tokens": 40, "max_new_tokens": 1024,
                                       "temperature": 0}
    for bad in ("cap", "0", "-3", "1.5", "²"):
        with pytest.raises(ConfigError, match="max_tokens must be exact, none or a cap"):
            BenchConfig(url="http://x", max_tokens=bad)


@pytest.mark.asyncio
async def test_open_loop_sends_a_follower_after_the_reply_it_follows():
    """``after``: a request due while the one it follows is still answering is sent when
    that answer is complete; the others leave at their times."""
    import numpy as np

    reqs = [Request(0, np.arange(1, 9), 2, arrival=0.0),
            Request(1, np.arange(1, 12), 2, arrival=0.01, after=0),
            Request(2, np.arange(50, 60), 2, arrival=0.02)]
    async with FakeServer(first=0.3) as srv:
        run = await run_workload(OpenLoop.of("turns", reqs), BenchConfig(srv.url))
    by_rid = {r.rid: r for r in run.results}
    assert all(r.ok for r in run.results) and len(run.results) == 3
    assert by_rid[1].sent >= by_rid[0].finish
    assert by_rid[1].scheduled == pytest.approx(0.01)
    assert by_rid[2].sent < 0.2
    paced = [reqs[0], Request(1, np.arange(1, 12), 2, arrival=0.01, after=0, pace=0.6)]
    async with FakeServer(first=0.1) as srv:
        run = await run_workload(OpenLoop.of("paced", paced), BenchConfig(srv.url))
    by_rid = {r.rid: r for r in run.results}
    assert by_rid[0].finish < 0.5 and by_rid[1].sent >= by_rid[0].sent + 0.6
