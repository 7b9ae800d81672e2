"""The live router's prefix index is bounded by what each engine says it can hold."""

from __future__ import annotations

import pytest

from tests.server.test_router_app import SGLANG_PAGE, FakeWorker, cluster


@pytest.mark.asyncio
async def test_the_index_holds_at_most_each_engines_kv_pool() -> None:
    """Routing on characters, an engine of 100,000 KV tokens gets 400,000 units (4 a
    token); one that reports nothing keeps the default 2^24 bound."""
    reporting, silent = FakeWorker(metrics=SGLANG_PAGE), FakeWorker()
    async with cluster([reporting, silent], policy="round_robin") as (_, rt):
        await rt.checks.scrape_engines()
        assert rt.router.index is not None
        assert rt.router.index.capacities().tolist() == [400_000, 1 << 24]


@pytest.mark.asyncio
async def test_the_units_a_token_are_measured_from_the_engines_reports() -> None:
    """Once a completion carried the engine's prompt tokens (10 for "hello world"'s 11
    characters), the bound is 1.1 units a token instead of the prior 4."""
    reporting = FakeWorker(metrics=SGLANG_PAGE)
    async with cluster([reporting], policy="round_robin") as (client, rt):
        assert rt.router.units_per_token() is None
        resp = await client.post("/v1/completions", json={"prompt": "hello world"})
        assert resp.status == 200
        await resp.read()
        assert rt.router.units_per_token() == pytest.approx(1.1)
        await rt.checks.scrape_engines()
        assert rt.router.index is not None
        assert rt.router.index.capacities().tolist() == [110_000]


@pytest.mark.asyncio
async def test_a_fixed_index_capacity_is_kept() -> None:
    """--index-capacity wins over what the engines report."""
    reporting = FakeWorker(metrics=SGLANG_PAGE)
    async with cluster([reporting], policy="round_robin", index_capacity=5_000) as (_, rt):
        await rt.checks.scrape_engines()
        assert rt.router.index is not None
        assert rt.router.index.capacities().tolist() == [5_000]
