"""The kvroute request router's hooks driven directly, in the order Ray Serve calls them,
with stand-in replicas (no Ray instance): every path a dispatch can end by closes it
exactly once, and the policy hears it once."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

pytest.importorskip("ray.serve")

from ray.serve._private.common import (
    DeploymentHandleSource,
    DeploymentID,
    ReplicaID,
    RequestMetadata,
)
from ray.serve.request_router import PendingRequest

from kvroute.integrations.ray_replica import ServePrompt
from kvroute.integrations.ray_serve import KvrouteRequestRouter, load_stats

DEP = DeploymentID(name="engine", app_name="app")


class Replica:
    """What the request router reads of a RunningReplica."""

    def __init__(self, name: str, stats: dict[str, Any] | None = None) -> None:
        self.replica_id = ReplicaID(unique_id=name, deployment_id=DEP)
        self.routing_stats = stats or {}
        self.max_ongoing_requests = 100

    async def get_queue_len(self, *, deadline_s: float) -> int:
        return 0


class Result:
    """A ReplicaResult whose done callbacks the test fires."""

    def __init__(self) -> None:
        self.callbacks: list[Any] = []

    def add_done_callback(self, cb: Any) -> None:
        self.callbacks.append(cb)

    def finish(self, out: Any) -> None:
        for cb in self.callbacks:
            cb(out)


def pending(i: int, text: str = "a long shared prefix " * 20) -> PendingRequest:
    pr = PendingRequest(args=[ServePrompt(text + str(i), 4)], kwargs={},
                        metadata=RequestMetadata(request_id=str(i),
                                                 internal_request_id=f"r{i}"))
    return pr


def make(policy: str = "cache_aware") -> tuple[KvrouteRequestRouter, Counter]:
    r = KvrouteRequestRouter(deployment_id=DEP, handle_source=DeploymentHandleSource.UNKNOWN)
    r.initialize_state(policy=policy)
    heard: Counter = Counter()
    inner = r.policy.on_complete

    def on_complete(fb: Any) -> None:
        heard[fb.rid] += 1
        inner(fb)

    r.policy.on_complete = on_complete  # type: ignore[method-assign]
    return r, heard


async def settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


@pytest.mark.asyncio
async def test_accepted_refused_cancelled_and_dead_each_close_once():
    router, heard = make()
    reps = [Replica(n, load_stats(1, 2, 0.5, 1000, max_running=8 if n == "a" else 0))
            for n in "abc"]
    router.update_replicas(reps)
    assert router.members == [r.replica_id for r in reps]
    assert [w.waiting for w in router.router.workers] == [2, 2, 2]  # routing stats reported
    assert [w.max_running for w in router.router.workers] == [8, 0, 0]

    # accepted, finished ok
    pr = pending(0)
    (rank,) = await router.choose_replicas(reps, pr)
    assert len(rank) == 1
    pr.future.set_result(rank[0])
    res = Result()
    router.on_request_routed(pr, rank[0].replica_id, res)
    res.finish("answer")
    await settle()
    router.on_request_completed(rank[0].replica_id, "r0")
    assert router.stats()["ok"] == 1 and router.stats()["open"] == 0

    # refused: Serve asks again, the first replica is left out, then accepted with an error
    pr = pending(1)
    (first,) = (await router.choose_replicas(reps, pr))[0]
    pr.future.set_result(first)
    router.on_request_completed(first.replica_id, "r1")  # sent, rejected
    pr.reset_future()
    (second,) = (await router.choose_replicas(reps, pr))[0]
    assert second is not first
    pr.future.set_result(second)
    res = Result()
    router.on_request_routed(pr, second.replica_id, res)
    res.finish(RuntimeError("the replica raised"))
    await settle()
    s = router.stats()
    assert (s["routed"], s["ok"], s["failed"], s["refused"], s["open"]) == (3, 1, 2, 1, 0)

    # the caller gave up before any replica took it
    pr = pending(2)
    await router.choose_replicas(reps, pr)
    pr.future.cancel()
    await router.choose_replicas(reps, pending(3))  # any later call sweeps it
    assert router.stats()["refused"] == 2

    # a replica dies with the request on it; its late result changes nothing
    (victim,) = [router.members[d.worker] for d in router.router._open]
    pr3 = router._chosen["r3"].request
    pr3.future.set_result(next(r for r in reps if r.replica_id == victim))
    res = Result()
    router.on_request_routed(pr3, victim, res)
    router.on_replica_actor_died(victim)
    assert victim not in router.members and len(router.router.workers) == 2
    res.finish(RuntimeError("actor died"))
    await settle()
    s = router.stats()
    assert s["routed"] == s["ok"] + s["failed"] and s["open"] == 0
    assert sum(heard.values()) == s["routed"] and set(heard.values()) == {1}

    # membership: the replica set shrinks and grows through update_replicas
    router.update_replicas([reps[0], Replica("d")])
    assert [m.unique_id for m in router.members] == ["a", "d"]


@pytest.mark.asyncio
async def test_a_call_without_a_prompt_is_left_to_serve():
    router, heard = make("round_robin")
    reps = [Replica("a"), Replica("b")]
    router.update_replicas(reps)
    pr = PendingRequest(args=[42], kwargs={},
                        metadata=RequestMetadata(request_id="x", internal_request_id="x"))
    assert await router.choose_replicas(reps, pr) == [reps]
    assert router.stats()["unrouted"] == 1 and router.stats()["routed"] == 0
    assert not heard  # nothing for the policy to hear about


@pytest.mark.asyncio
async def test_replica_stats_that_are_not_a_load_are_left_unread_and_counted():
    router, _ = make()
    good = load_stats(3, 1, 0.5, 1000)
    reps = [Replica("a", good), Replica("b", good)]
    router.update_replicas(reps)
    reps[0].routing_stats = {**good, "kv_usage": float("nan")}
    reps[1].routing_stats = {**good, "running": "many"}
    router.update_replicas(reps)
    assert router.stats()["bad_load"] == 2
    assert [(w.running, w.kv_usage) for w in router.router.workers] == [(3, 0.5), (3, 0.5)]


@pytest.mark.asyncio
async def test_done_before_accepted_counts_ok_and_an_orphan_closes_after_the_grace():
    """A fast replica's request is reported done before Serve reports it accepted: it
    closes ok when its result is in, not as refused. A choice reported done that is never
    accepted nor asked for again closes as refused at a sweep after the grace time."""
    router, heard = make()
    reps = [Replica(n, load_stats(0, 0, 0.1, 1000)) for n in "ab"]
    router.update_replicas(reps)
    t = [100.0]
    router.clock = lambda: t[0]

    pr = pending(0)
    (rank,) = await router.choose_replicas(reps, pr)
    pr.future.set_result(rank[0])
    res = Result()
    router.on_request_completed(rank[0].replica_id, "r0")  # done first...
    router.on_request_routed(pr, rank[0].replica_id, res)  # ...then reported accepted
    res.finish("answer")
    await settle()
    s = router.stats()
    assert (s["ok"], s["failed"], s["open"]) == (1, 0, 0)

    pr = pending(1)
    (rank,) = await router.choose_replicas(reps, pr)
    pr.future.set_result(rank[0])
    router.on_request_completed(rank[0].replica_id, "r1")  # never accepted, never again
    t[0] += 1.0
    await router.choose_replicas(reps, pending(2))  # within the grace: still open
    assert router.stats()["open"] == 2
    t[0] += 10.0
    await router.choose_replicas(reps, pending(3))  # past it: r1 closes as refused
    s = router.stats()
    assert (s["refused"], s["failed"], s["open"]) == (1, 1, 2)
    assert heard[0] == 1 and sum(heard.values()) == 2


def test_an_emulated_replica_is_one_engine() -> None:
    """Serve's replicas are the data parallelism: a replica with ranks is refused, clearly."""
    from kvroute.errors import ConfigError
    from kvroute.integrations.ray_replica import EmulatedReplica

    with pytest.raises(ConfigError, match="num_replicas"):
        EmulatedReplica(dp_size=2)
    assert EmulatedReplica(speed=50.0).engine.rank == 0


@pytest.mark.asyncio
async def test_a_multiplexed_model_has_its_own_prefixes():
    """Ray Serve LLM serves LoRA adapters as multiplexed models: a prompt for one does not
    follow the same prompt of the base model (or another adapter) in the index."""
    router, _ = make("cache_aware_v2")
    reps = [Replica(n) for n in "ab"]
    router.update_replicas(reps)
    base = pending(0, "the same prompt " * 20)
    await router.choose_replicas(reps, base)
    units = router._chosen["r0"].dispatch.req.units
    lora = PendingRequest(args=[ServePrompt("the same prompt " * 20 + "0", 4)], kwargs={},
                          metadata=RequestMetadata(request_id="1", internal_request_id="r1",
                                                   multiplexed_model_id="sql-lora"))
    await router.choose_replicas(reps, lora)
    req = router._chosen["r1"].dispatch.req
    assert req.adapter == "sql-lora" and (req.units == units).all()
    assert req._matched is not None and req._matched.tolist() == [0, 0]
    assert router._chosen["r0"].dispatch.req.adapter is None
