"""The kvroute request router inside Ray Serve: a local Ray instance, one Serve app of three
emulated replicas behind it (shared by the module's tests; the replica-killing test runs
last)."""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from kvroute.errors import ConfigError

ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")

from kvroute.integrations.ray_replica import ServePrompt, emulated_deployment  # noqa: E402
from kvroute.integrations.ray_serve import KvrouteRequestRouter, routers  # noqa: E402

APP = "kvroute-test"
PREFIX = "You are a careful assistant who answers in one short paragraph. " * 40


@pytest.fixture(scope="module")
def handle():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    serve.start(proxy_location="Disabled")  # handles only: no port to bind
    dep = emulated_deployment(3, KvrouteRequestRouter, {"policy": "cache_aware"},
                              stats_period_s=0.2)
    app = dep.options(ray_actor_options={"num_cpus": 0}).bind(speed=20.0, capacity=100_000)
    h = serve.run(app, name=APP, route_prefix=None)
    yield h
    serve.shutdown()
    ray.shutdown()


def router_of(h) -> KvrouteRequestRouter:
    h.remote(ServePrompt("warm up", 1)).result()  # the handle's router exists from here
    (r,) = [r for r in routers() if r.app_name == APP]
    settle(r)
    return r


def settle(router: KvrouteRequestRouter) -> dict:
    """The router's stats once every dispatch is closed (results' done callbacks run on
    the router's own loop, a moment after the caller has its answer)."""
    deadline = time.monotonic() + 10
    while router.stats()["open"] and time.monotonic() < deadline:
        time.sleep(0.05)
    return router.stats()


def count_feedback(router: KvrouteRequestRouter) -> Counter:
    """Wrap the policy's on_complete: how many times it heard of each dispatch."""
    heard: Counter = Counter()
    policy = router.policy
    inner = policy.on_complete

    def on_complete(fb):
        heard[fb.rid] += 1
        inner(fb)

    policy.on_complete = on_complete  # type: ignore[method-assign]
    return heard


def test_cache_aware_keeps_a_shared_prefix_on_one_replica(handle):
    router = router_of(handle)
    outs = [handle.remote(ServePrompt(PREFIX + f"Question {i}?", 4)).result()
            for i in range(12)]
    assert len({o["replica"] for o in outs}) == 1
    assert all(o["cached_tokens"] > 0 for o in outs[1:])  # the replica's own cache hit it
    other = handle.remote(ServePrompt("Something unrelated entirely " * 30, 4)).result()
    assert other["replica"] != outs[0]["replica"]  # a miss goes to a smaller tree
    stats = router.stats()
    assert stats["policy"] == "cache_aware" and len(stats["workers"]) == 3


def test_engine_load_arrives_through_routing_stats(handle):
    """The replicas' pool size arrives (their usage is 0 while nothing is in flight: the
    cached prompts are evictable, and engines count those as free)."""
    router = router_of(handle)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and \
            not all(w["kv_capacity"] > 0 for w in router.stats()["workers"]):
        time.sleep(0.2)
    workers = router.stats()["workers"]
    assert all(w["kv_capacity"] > 0 and 0.0 <= w["kv_usage"] <= 1.0 for w in workers)


def test_every_routed_request_is_closed_exactly_once(handle):
    router = router_of(handle)
    heard = count_feedback(router)
    before = router.stats()
    with ThreadPoolExecutor(16) as pool:
        outs = list(pool.map(lambda i: handle.remote(
            ServePrompt(PREFIX[: 200 + 40 * (i % 5)] + str(i), 8)).result(), range(48)))
    assert len(outs) == 48
    stats = settle(router)
    routed = stats["routed"] - before["routed"]
    assert routed >= 48  # a replica that refused (full queue) makes one more dispatch
    assert stats["open"] == 0
    assert stats["routed"] == stats["ok"] + stats["failed"]
    assert stats["ok"] - before["ok"] == 48
    assert sum(heard.values()) == routed
    assert all(v == 1 for v in heard.values())


def test_a_killed_replica_is_routed_around_and_no_request_is_lost(handle):
    router = router_of(handle)
    heard = count_feedback(router)
    first = handle.remote(ServePrompt(PREFIX + "warm", 4)).result()["replica"]
    (victim,) = [m for m in router.members if m.unique_id == first]

    def ask(i: int) -> tuple[dict, int]:
        retries = 0
        while True:
            try:
                return handle.remote(ServePrompt(PREFIX + f"Q{i}", 1500)).result(), retries
            except ray.exceptions.RayActorError:  # it ran on the killed replica
                retries += 1

    with ThreadPoolExecutor(12) as pool:
        futs = [pool.submit(ask, i) for i in range(24)]
        time.sleep(0.3)
        ray.kill(ray.get_actor(victim.to_full_id_str(), namespace="serve"), no_restart=True)
        results = [f.result(timeout=60) for f in futs]
    assert len(results) == 24
    assert sum(r for _, r in results) > 0  # some were running there when it died
    assert all(o["replica"] != first for o, r in results if r)  # retried elsewhere
    stats = settle(router)
    assert victim not in router.members
    assert stats["open"] == 0 and stats["routed"] == stats["ok"] + stats["failed"]
    assert stats["failed"] >= sum(r for _, r in results)
    assert all(v == 1 for v in heard.values())


def test_bad_router_kwargs_are_config_errors():
    r = KvrouteRequestRouter.__new__(KvrouteRequestRouter)
    with pytest.raises(ConfigError, match="oracle"):
        r.initialize_state(policy="oracle")
    with pytest.raises(ConfigError, match="does not take 'colour'"):
        r.initialize_state(policy="cache_aware", policy_args={"colour": 1})
