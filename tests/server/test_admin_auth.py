"""Every admin route refuses a missing, malformed or wrong key, and changes nothing then."""

from __future__ import annotations

import pytest

from tests.server.test_router_app import FakeWorker, cluster

ROUTES = [("GET", "/workers"), ("POST", "/workers"), ("DELETE", "/workers"),
          ("POST", "/add_worker"), ("POST", "/remove_worker")]
BAD = [None, "", "Bearer", "Bearer ", "Bearer wrong", "bearer s3cret", "Basic s3cret",
       "Bearer s3cret2", "s3cret"]


@pytest.mark.asyncio
async def test_every_admin_route_refuses_a_bad_key() -> None:
    a, b = FakeWorker(), FakeWorker()
    await b.start()
    try:
        async with cluster([a], api_key="s3cret") as (client, r):
            for method, path in ROUTES:
                for auth in BAD:
                    headers = {} if auth is None else {"Authorization": auth}
                    resp = await client.request(method, f"{path}?url={b.url}", headers=headers)
                    assert resp.status == 401, (method, path, auth)
                    body = await resp.json()
                    assert body["error"]["type"]
            assert [w.url for w in r.members.workers] == [a.url]
            assert len(r.router.workers) == 1
            ok = await client.get("/workers", headers={"Authorization": "Bearer s3cret"})
            assert ok.status == 200
    finally:
        await b.stop()
