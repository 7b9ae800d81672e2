"""LoRA adapters in the router's prefix index: the engines key their prefix caches by
adapter, so prompts of different adapters (or an adapter's and the base model's) share
no cached prefix, and the router must not believe they do."""

from __future__ import annotations

import aiohttp
import numpy as np
import pytest

from kvroute.events import BlockIndex, BlockIndexSource, BlockStored
from kvroute.protocol.request_body import adapter_of
from kvroute.routing import make_router_policy
from kvroute.routing.base import RouteRequest
from kvroute.routing.prefix_index import PrefixIndex, adapter_unit
from kvroute.routing.router import Router
from kvroute.server.app import ServeConfig, build_app
from kvroute.worker import EmulatedConfig, create_app
from tests.server.test_responses_api import _start

PROMPT = np.arange(100, 140, dtype=np.int64)


def test_each_adapter_has_its_own_prefixes() -> None:
    idx = PrefixIndex(3)
    idx.record(0, PROMPT, 1.0)  # the base model
    idx.record(1, PROMPT[:30], 2.0, adapter="sql")
    assert idx.match(PROMPT).tolist() == [40, 0, 0]
    assert idx.match(PROMPT, adapter="sql").tolist() == [0, 30, 0]
    assert idx.match(PROMPT, adapter="chat").tolist() == [0, 0, 0]
    matched, times = idx.match_last_sent(PROMPT, adapter="sql")
    assert matched.tolist() == [0, 30, 0] and times.tolist() == [-np.inf, 2.0, -np.inf]
    assert idx.sizes().tolist() == [40, 31, 0]  # the adapter's unit is held too
    # two prompts of one adapter share their common prefix, and only that
    other = np.concatenate([PROMPT[:10], PROMPT[:5]])
    idx.record(2, other, 3.0, adapter="sql")
    assert idx.match(PROMPT, adapter="sql").tolist() == [0, 30, 10]


def test_forgetting_an_adapters_prompt_restores_the_index() -> None:
    idx = PrefixIndex(2)
    idx.record(0, PROMPT[:20], 1.0, adapter="sql")
    before = idx.sizes().tolist()
    held = int(idx.match(PROMPT, adapter="sql")[0])
    idx.record(0, PROMPT, 2.0, adapter="sql")
    idx.forget(0, PROMPT, held, 2.0, adapter="sql")
    assert idx.sizes().tolist() == before
    assert idx.match(PROMPT, adapter="sql").tolist() == [20, 0]
    idx.record(1, PROMPT, 3.0, adapter="chat")  # held nothing of it: all of it goes
    idx.forget(1, PROMPT, 0, 3.0, adapter="chat")
    assert idx.sizes().tolist() == before


def test_adapter_units_are_negative_and_stable() -> None:
    assert adapter_unit("sql") == adapter_unit("sql") < 0
    assert adapter_unit("sql") != adapter_unit("chat")
    assert adapter_unit("x" * 1000) >= -(2 ** 31)  # the index narrows keys to 32 bits


@pytest.mark.parametrize("policy", ["cache_aware_v2", "learned"])
def test_the_router_does_not_send_an_adapter_after_another_adapters_prefix(
        policy: str) -> None:
    router = Router(make_router_policy(policy, seed=1), 4)
    first = router.route(RouteRequest(PROMPT, adapter="sql"), 1.0)
    router.complete(first, 1.5)
    same = RouteRequest(PROMPT.copy(), adapter="sql")
    assert router.matched(same).tolist()[first.worker] == len(PROMPT)
    for other in (RouteRequest(PROMPT.copy(), adapter="chat"), RouteRequest(PROMPT.copy())):
        assert router.matched(other).tolist() == [0, 0, 0, 0]


def test_an_exact_source_is_asked_for_the_adapters_blocks() -> None:
    index = BlockIndex()
    index.apply(BlockStored((1,), None, tuple(range(100, 116)), 16, lora_name="sql"))
    router = Router(make_router_policy("cache_aware_v2", seed=1), 2)
    router.attach_exact(0, BlockIndexSource(index))
    assert router.matched(RouteRequest(PROMPT, adapter="sql")).tolist()[0] == 16
    assert router.matched(RouteRequest(PROMPT.copy())).tolist()[0] == 0
    # a prompt in flight to an exact worker counts for its own adapter only
    d = router.route(RouteRequest(PROMPT.copy(), adapter="chat"), 1.0, allowed=[True, False])
    assert router.matched(RouteRequest(PROMPT.copy(), adapter="chat")).tolist()[0] == 40
    assert router.matched(RouteRequest(PROMPT.copy(), adapter="sql")).tolist()[0] == 16
    router.complete(d, 2.0)


def test_the_adapter_of_a_request() -> None:
    names = frozenset({"sql", "chat"})
    assert adapter_of("chat", {"model": "sql"}, names) == "sql"
    assert adapter_of("completions", {"model": "base"}, names) is None
    assert adapter_of("generate", {"lora_path": "chat"}, names) == "chat"
    assert adapter_of("generate", {"lora_path": ["chat", "sql"]}, names) is None  # a batch
    assert adapter_of("chat", {"model": "sql"}, frozenset()) is None  # none declared


@pytest.mark.asyncio
async def test_the_live_router_keeps_adapters_apart() -> None:
    workers = [await _start(create_app(EmulatedConfig(speed=50.0))) for _ in range(2)]
    app = build_app(ServeConfig(worker_urls=[u for _, u in workers], health_interval=5.0,
                                lora_adapters=frozenset({"sql"})),
                    make_router_policy("cache_aware_v2"))
    await app.start("127.0.0.1", 0)
    body = {"messages": [{"role": "user", "content": "the same question"}], "max_tokens": 2}
    try:
        async with aiohttp.ClientSession() as http, http.post(
                f"http://127.0.0.1:{app.port}/v1/chat/completions",
                json={**body, "model": "sql"}) as r:
            assert r.status == 200
            owner = [u for _, u in workers].index(r.headers["X-Kvroute-Worker"])
        units = app.prompts.units("chat", body)
        assert app.router.matched(RouteRequest(units, adapter="sql")).tolist()[owner] \
            == len(units)
        assert app.router.matched(RouteRequest(units)).tolist() == [0, 0]  # the base model
    finally:
        await app.stop()
        for runner, _ in workers:
            await runner.cleanup()
