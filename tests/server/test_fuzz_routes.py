"""Generated requests against every route of the router: never a 5xx from the router
itself, never a traceback in a body, and the router keeps serving."""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvroute.routing import make_router_policy
from kvroute.server.app import ServeConfig, build_app
from tests.server.test_router_app import FakeWorker

PATHS = ["/v1/completions", "/v1/chat/completions", "/generate", "/v1/models", "/health",
         "/readiness", "/liveness", "/metrics", "/workers", "/add_worker", "/remove_worker",
         "/nope", "/v1/completions/x", "/", "/v1/responses", "/v1/responses/resp_x",
         "/v1/responses/", "/v1/responses/resp_x/cancel"]
METHODS = ["GET", "POST", "DELETE", "PUT", "PATCH", "OPTIONS"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False)
    | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner,
                                                                max_size=5),
    max_leaves=20)
fields = st.sampled_from(["prompt", "messages", "text", "input_ids", "max_tokens", "stream",
                          "sampling_params", "model", "url", "max_completion_tokens",
                          "input", "instructions", "previous_response_id",
                          "max_output_tokens"])
bodies = st.one_of(
    st.dictionaries(fields, json_values, max_size=5).map(lambda d: json.dumps(d).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=200))


@pytest.fixture(scope="module")
def router_port() -> Iterator[int]:
    """A router in front of one healthy fake worker, on its own event-loop thread."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    state: dict[str, Any] = {}

    async def start() -> None:
        worker = await FakeWorker().start()
        app = build_app(ServeConfig(worker_urls=[worker.url], health_interval=0,
                                    metrics_interval=0, request_timeout=5.0),
                        make_router_policy("cache_aware", seed=0))
        await app.start("127.0.0.1", 0)
        state.update(worker=worker, app=app)
        ready.set()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop)
    assert ready.wait(10)
    yield state["app"].port

    async def stop() -> None:
        await state["app"].stop()
        await state["worker"].stop()

    asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


def send(port: int, method: str, path: str, body: bytes,
         headers: dict[str, str]) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(method=st.sampled_from(METHODS), path=st.sampled_from(PATHS), body=bodies,
       content_type=st.sampled_from(["application/json", "text/plain", ""]),
       session=st.none() | st.text(st.characters(min_codepoint=32, max_codepoint=126),
                                   max_size=20))
def test_no_request_gets_a_5xx(router_port: int, method: str, path: str, body: bytes,
                               content_type: str, session: str | None) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    if session is not None:
        headers["X-Session-ID"] = session
    status, data = send(router_port, method, path, body, headers)
    assert status < 500, (status, data[:200])
    assert b"Traceback" not in data
    status, _ = send(router_port, "POST", "/v1/completions",
                     json.dumps({"prompt": "still here", "max_tokens": 2}).encode(),
                     {"Content-Type": "application/json"})
    assert status == 200
