"""The logic of :class:`kvroute.integrations.ray_serve.KvrouteRequestRouter` (its contract
is there). It lives apart because Serve pickles the configured router class's own module
by value into every handle and proxy: module-level objects here (the policy registry, the
set of live routers) must stay this module's, imported, not copies."""

from __future__ import annotations

import time
import weakref
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from kvroute.integrations._ray import require_ray
from kvroute.protocol.request_body import BadRequest, PromptEncoder, max_tokens_of
from kvroute.routing.base import RouteRequest
from kvroute.routing.prefix_index import DEFAULT_INDEX_CAPACITY
from kvroute.routing.registry import ROUTING, make_router_policy
from kvroute.routing.router import Dispatch, Router

require_ray()

from ray.serve.request_router import (  # noqa: E402 - after the friendly check
    PendingRequest,
    ReplicaID,
    RequestRouter,
    RunningReplica,
)

__all__ = ["LOAD_KEYS", "KvrouteRouting", "load_stats", "request_body", "routers"]

LOAD_KEYS = ("running", "waiting", "kv_usage", "kv_capacity")
_ROUTES = (("messages", "chat"), ("prompt", "completions"), ("text", "generate"),
           ("input_ids", "generate"))
_REFUSED_KEPT = 4096  # requests whose refusals are remembered
_UNROUTED_GRACE_S = 5.0  # reported done but neither accepted nor asked again: refused
_LIVE: weakref.WeakSet[KvrouteRouting] = weakref.WeakSet()


def load_stats(running: int, waiting: int, kv_usage: float, kv_capacity: int,
               max_running: int = 0) -> dict[str, Any]:
    """What a replica's ``record_routing_stats()`` returns for the router's ``report_load``:
    requests running and queued, the fraction of its KV pool in use, the pool in tokens,
    and its cap on running requests (0: none; the key may be absent)."""
    return {"running": int(running), "waiting": int(waiting), "kv_usage": float(kv_usage),
            "kv_capacity": int(kv_capacity), "max_running": int(max_running)}


def routers() -> list[KvrouteRouting]:
    """The kvroute request routers alive in this process (for stats and tests)."""
    return list(_LIVE)


def request_body(args: Any, kwargs: Any) -> tuple[str, dict[str, Any]] | None:
    """The first argument that carries a prompt, as (route, OpenAI-style body): a dict with
    ``messages``/``prompt``/``text``/``input_ids``, or an object with a ``messages`` or
    ``prompt`` attribute (Ray Serve LLM's request objects, :class:`ServePrompt`)."""
    for arg in (*args, *kwargs.values()):
        if isinstance(arg, dict):
            for key, route in _ROUTES:
                if key in arg:
                    return route, arg
            continue
        for key, route in _ROUTES[:2]:
            value = getattr(arg, key, None)
            if value is not None:
                if key == "messages":
                    value = [m.model_dump() if hasattr(m, "model_dump") else m for m in value]
                return route, {key: value, "max_tokens": getattr(arg, "max_tokens", None)}
    return None


@dataclass(eq=False)
class _Attempt:
    dispatch: Dispatch
    replica: ReplicaID
    request: PendingRequest


class KvrouteRouting(RequestRouter):  # type: ignore[misc, unused-ignore]  # Any without ray
    """Routes a deployment's requests with a kvroute policy (see ``ray_serve``)."""

    def initialize_state(  # type: ignore[override, unused-ignore]  # Serve: **kwargs
            self, policy: str = "cache_aware", policy_args: dict[str, Any] | None = None,
            seed: int = 0, tokenizer: str | None = None,
            index_capacity: int = DEFAULT_INDEX_CAPACITY) -> None:
        ROUTING.require(policy, "in Ray Serve", needs_probes=False)
        self.policy = make_router_policy(policy, policy_args or {}, seed=seed)
        self.index_capacity = index_capacity
        tok = None
        template = None
        if tokenizer:
            from kvroute.workloads.chat_template import find_chat_template
            from kvroute.workloads.tokenizer import load_tokenizer
            tok, template = load_tokenizer(tokenizer), find_chat_template(tokenizer)
        self.encoder = PromptEncoder(tok, template)
        self.router: Router | None = None  # built with the first replica
        self.members: list[ReplicaID] = []  # worker i of the Router is members[i]
        # routed, ok, failed, refused, unrouted; bad_load: replica stats left unread
        self.counts: Counter[str] = Counter()
        self._chosen: dict[str, _Attempt] = {}  # by internal request id: not yet accepted
        self._refused: dict[str, set[ReplicaID]] = {}  # replicas that did not take it
        self._done_unrouted: dict[str, float] = {}  # chosen, reported done, not accepted yet
        self.clock = time.monotonic  # seconds; tests replace it
        _LIVE.add(self)

    # --- membership and load ----------------------------------------------------------
    def update_replicas(self, replicas: list[RunningReplica]) -> None:
        super().update_replicas(replicas)
        now = self.clock()
        current = {r.replica_id for r in replicas}
        for rid in [m for m in self.members if m not in current]:
            self._remove(rid, now)
        for r in replicas:
            if r.replica_id not in self.members:
                self._add(r.replica_id)
        assert self.router is not None or not replicas
        for r in replicas:
            self._report(r)

    def on_replica_actor_died(self, replica_id: ReplicaID) -> None:
        super().on_replica_actor_died(replica_id)
        if replica_id in self.members:
            self._remove(replica_id, self.clock())

    def _add(self, replica: ReplicaID) -> None:
        if self.router is None:
            self.router = Router(self.policy, 1, self.index_capacity)
        else:
            self.router.add_worker()
        self.members.append(replica)

    def _remove(self, replica: ReplicaID, now: float) -> None:
        assert self.router is not None
        closed = self.router.remove_worker(self.members.index(replica), now)
        self.counts["failed"] += len(closed)
        self.members.remove(replica)

    def _report(self, replica: RunningReplica) -> None:
        stats = replica.routing_stats or {}
        if self.router is None or not all(k in stats for k in LOAD_KEYS):
            return
        try:
            self.router.report_load(self.members.index(replica.replica_id),
                                    running=int(stats["running"]),
                                    waiting=int(stats["waiting"]),
                                    kv_usage=float(stats["kv_usage"]),
                                    kv_capacity=int(stats["kv_capacity"]),
                                    max_running=int(stats.get("max_running", 0)))
        except (TypeError, ValueError, OverflowError):  # not numbers, NaN, negative: kept out
            self.counts["bad_load"] += 1

    # --- routing ------------------------------------------------------------------------
    def _units(self, pr: PendingRequest) -> tuple[np.ndarray, int | None] | None:
        found = request_body(pr.args, pr.kwargs)
        if found is None:
            return None
        route, body = found
        try:
            return self.encoder.units(route, body), max_tokens_of(route, body)
        except BadRequest:
            return None  # the replica will answer it; the policy has nothing to go on

    async def choose_replicas(self, candidate_replicas: list[RunningReplica],
                              pending_request: PendingRequest | None = None
                              ) -> list[list[RunningReplica]]:
        now = self.clock()
        self._sweep(now)
        if pending_request is None:
            return [candidate_replicas]
        key = pending_request.metadata.internal_request_id
        prev = self._chosen.pop(key, None)
        self._done_unrouted.pop(key, None)
        if prev is not None:  # Serve asks again: the last choice did not take it
            self._close_unaccepted(prev, now)
            self._refuse(key, prev.replica)
        refused = self._refused.setdefault(key, set())
        found = self._units(pending_request)
        by_id = {r.replica_id: r for r in candidate_replicas}
        if found is None or self.router is None or not by_id.keys() & set(self.members):
            del self._refused[key]
            self.counts["unrouted"] += 1
            return [candidate_replicas]
        mask = [m in by_id and m not in refused for m in self.members]
        if not any(mask):  # every candidate refused it once: try them all again
            refused.clear()
            mask = [m in by_id for m in self.members]
        units, max_tokens = found
        # a multiplexed model (Ray Serve LLM serves LoRA adapters so): its own prefixes
        adapter = getattr(pending_request.metadata, "multiplexed_model_id", "") or None
        d = self.router.route(RouteRequest(units, max_tokens=max_tokens, streamed=False,
                                           adapter=adapter), now, mask)
        self.counts["routed"] += 1
        chosen = self.members[d.worker]
        self._chosen[key] = _Attempt(d, chosen, pending_request)
        return [[by_id[chosen]]]

    # --- accounting ---------------------------------------------------------------------
    def on_request_routed(self, pending_request: PendingRequest, replica_id: ReplicaID,
                          result: Any) -> None:
        key = pending_request.metadata.internal_request_id
        self._refused.pop(key, None)
        self._done_unrouted.pop(key, None)
        att = self._chosen.pop(key, None)
        if att is None:
            return  # not the policy's (no prompt)
        if att.replica != replica_id:  # cannot happen with one replica per rank
            self._close_unaccepted(att, self.clock())
            return
        loop = self._event_loop
        d = att.dispatch
        result.add_done_callback(
            lambda out, d=d: loop.call_soon_threadsafe(self._finished, d, out))

    def on_request_completed(self, replica_id: ReplicaID, internal_request_id: str) -> None:
        """Serve reports a request done on ``replica_id``. If the replica never accepted it
        (rejected, or the send failed), Serve asks again for it (``choose_replicas`` closes
        this choice then) or its caller gives up (``_sweep``). A fast replica's accepted
        request can also be reported done *before* ``on_request_routed``: so nothing is
        closed here; a choice reported done that neither is accepted nor asked for again
        within ``_UNROUTED_GRACE_S`` is closed as refused by a later ``_sweep``."""
        att = self._chosen.get(internal_request_id)
        fut = att.request.future if att is not None else None
        if att is not None and fut is not None and att.replica == replica_id and fut.done():
            self._done_unrouted.setdefault(internal_request_id, self.clock())

    def _refuse(self, key: str, replica: ReplicaID) -> None:
        """Leave ``replica`` out when Serve asks again for request ``key``. A request that
        is never asked for again leaves its entry; the oldest go past _REFUSED_KEPT."""
        self._refused.setdefault(key, set()).add(replica)
        while len(self._refused) > _REFUSED_KEPT:
            del self._refused[next(iter(self._refused))]

    def _finished(self, d: Dispatch, out: Any) -> None:
        ok = not isinstance(out, BaseException)
        if self.router is not None and self.router.complete(d, self.clock(), ok=ok):
            self.counts["ok" if ok else "failed"] += 1

    def _close_unaccepted(self, att: _Attempt, now: float) -> None:
        assert self.router is not None
        self.router.undelivered(att.dispatch)
        if self.router.complete(att.dispatch, now, ok=False):
            self.counts["failed"] += 1
            self.counts["refused"] += 1

    def _sweep(self, now: float) -> None:
        """Close the choices whose callers gave up before a replica took them, and those
        reported done that were neither accepted nor asked for again in the grace time."""
        for key, att in list(self._chosen.items()):
            if att.request.future.cancelled():
                del self._chosen[key]
                self._refused.pop(key, None)
                self._done_unrouted.pop(key, None)
                self._close_unaccepted(att, now)
        for key, at in list(self._done_unrouted.items()):
            if now - at > _UNROUTED_GRACE_S:
                del self._done_unrouted[key]
                self._refused.pop(key, None)
                gone = self._chosen.pop(key, None)
                if gone is not None:
                    self._close_unaccepted(gone, now)

    # --- introspection ------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Counts (routed, ok, failed, refused, unrouted), open dispatches, per-replica
        state. routed == ok + failed + open, always."""
        r = self.router
        workers = [] if r is None else [
            {"replica": m.unique_id, "in_flight": s.in_flight, "routed": s.routed,
             "completed": s.completed, "errors": s.errors, "running": s.running,
             "waiting": s.waiting, "kv_usage": s.kv_usage, "kv_capacity": s.kv_capacity,
             "max_running": s.max_running}
            for m, s in zip(self.members, r.workers, strict=True)]
        return {"policy": self.policy.name, **{k: self.counts[k] for k in
                                              ("routed", "ok", "failed", "refused",
                                               "unrouted", "bad_load")},
                "open": 0 if r is None else r.open_dispatches, "workers": workers}
