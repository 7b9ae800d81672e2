"""The cluster simulator: M simulated workers behind a router, driven by a workload.

``simulate(workload, config)`` runs to completion and returns a :class:`SimResult`. The
router is :class:`kvroute.routing.Router` with a registered policy, the very object the
live router uses; here its clock is the event loop's. Open-loop requests arrive at their
``arrival`` times (read lazily, in order); one whose ``after`` names an earlier request
no sooner than that one's completion and ``pace`` seconds after it was sent; closed-loop
clients send each turn when the previous reply is complete (plus think time). Same
inputs and seed, same result, bit for bit: every random choice comes from generators
seeded from ``config.seed``. With ``index="exact"`` the router's index is the workers'
own cache events (:mod:`kvroute.sim.exact_index`) instead of its routing history.

A request the routing policy holds back (late binding, ``RoutingPolicy.holds``) waits in
its router's :class:`~kvroute.routing.hold_queue.HoldQueue` and is routed when released,
asked again at every engine step, first token and finish; its record's ``arrival`` stays
the time it was sent, so the wait counts in its TTFT and E2E (the policy learns its TTFT
from the time it was routed, as the live router's).

What the router is told of a request's output (``config.max_tokens``): ``"exact"`` (the
default) sends its output length as ``max_tokens``, as benchmark clients do (a fixed
output with ``ignore_eos``); ``"none"`` sends none, as chat clients that omit it, so no
policy knows how long a request will decode; a number ``"N"`` sends N, a cap, as most
chat clients do (the output ends at the model's end of sequence, mostly far below it;
raised to a request's output where that is longer, so the workload does not change).
Every completion tells the router the tokens generated (``Feedback.output_tokens``), as
an engine's usage does. ``config.report_cached`` (default True):
whether the workers report each request's cached tokens with its completion, as SGLang
with ``--enable-cache-report`` and vLLM with ``--enable-prompt-tokens-details`` do; by
default neither engine's OpenAI API does. ``config.stream_share`` (default 1): the share
of requests that stream, so that the router sees their first token (the TTFT, and the
request moving from prefill to decode in its accounting; ``RouteRequest.streamed``); of
the others it sees only the completion, as a proxy does for a request that does not
stream. Which requests stream is drawn from a generator seeded from ``config.seed``.

``config.adapters`` (default 0): each request is for one of that many LoRA adapters
(:func:`kvroute.workloads.adapters.adapter_for`: by its first tokens, Zipf popularity),
told to the router (``RouteRequest.adapter``) and the worker, which runs at most
``config.max_loras`` distinct adapters at once (:mod:`kvroute.sim.worker`).

``config.router_replicas`` (default 1): that many independent routers share the workers,
as replicas of a router behind a load balancer do. Requests go to them in turn; each has
its own policy object (seeded ``config.seed + 7919 r`` for replica r) and prefix index,
counts only the requests it routed, and hears only their first tokens and completions;
every one hears the engines' reported load. With ``index="exact"`` they read the same
event-fed indexes, as every replica subscribes to the engines' events. The telemetry is
replica 0's.
"""

from __future__ import annotations

import itertools
import time
from array import array
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from kvroute.cache import Ceilings, hit_rate_ceilings
from kvroute.cache.ceilings import compact_requests
from kvroute.errors import ConfigError
from kvroute.routing import (
    Dispatch,
    Router,
    RouteRequest,
    RoutingPolicy,
    make_router_policy,
)
from kvroute.routing.hold_queue import HoldQueue
from kvroute.sim.events import ARRIVAL, EventLoop
from kvroute.sim.records import Records
from kvroute.sim.step_model import StepModel, check_speed
from kvroute.sim.step_profiles import DEFAULT_PROFILE, load_profile
from kvroute.sim.worker import Job, SimWorker, WorkerConfig
from kvroute.workloads.adapters import adapter_for
from kvroute.workloads.request import (
    ClosedLoop,
    OpenLoop,
    Request,
    Workload,
    check_max_tokens,
    max_tokens_sent,
    output_ids,
)

__all__ = ["SimConfig", "SimResult", "request_ceilings", "simulate", "worker_seed"]


@dataclass(frozen=True)
class SimConfig:
    workers: int = 4
    eviction: str = "lru"
    routing: str = "round_robin"
    eviction_args: Mapping[str, Any] = field(default_factory=dict)  # the policies' parameters
    routing_args: Mapping[str, Any] = field(default_factory=dict)
    profile: str = DEFAULT_PROFILE  # a profile name or a JSON file
    model: StepModel | None = None  # overrides ``profile`` when given
    capacity: int | None = None  # KV pool per worker; None: the profile's
    chunk_size: int = 8192
    max_running: int | None = None
    mixed_chunk: bool = False
    seed: int = 1
    debug: bool = False  # check every invariant after every step (slow)
    # the router's index: "approx" (learned from routing) or "exact" (the workers' cache
    # events, ``event_delay`` s late, in blocks of ``block_size`` tokens)
    index: str = "approx"
    event_delay: float = 0.0
    block_size: int = 16
    # each worker's speed relative to the profile (step times divided by it; same KV
    # pool), one per worker; empty: every worker at the profile's speed
    speeds: tuple[float, ...] = ()
    # what the router is told as each request's max_tokens: "exact" (its output length),
    # "none" (nothing) or "N" (a cap of N tokens; the module doc)
    max_tokens: str = "exact"
    # whether a completion reports its cached tokens to the router (the module doc)
    report_cached: bool = True
    # the share of requests whose first token the router sees (the module doc)
    stream_share: float = 1.0
    # independent routers in front of the workers (the module doc)
    router_replicas: int = 1
    # LoRA adapters the requests are drawn for (``workloads.adapters``; 0: the base model
    # only), and how many distinct ones a worker runs at once (None: no limit)
    adapters: int = 0
    max_loras: int | None = None

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ConfigError(f"workers must be >= 1, got {self.workers}")
        if self.speeds and len(self.speeds) != self.workers:
            raise ConfigError(f"give one speed per worker: {len(self.speeds)} speeds for "
                              f"{self.workers} workers")
        object.__setattr__(self, "speeds", tuple(check_speed(v) for v in self.speeds))
        if self.index not in ("approx", "exact"):
            raise ConfigError(f"index must be approx or exact, got {self.index!r}")
        if isinstance(self.router_replicas, bool) or not isinstance(self.router_replicas, int) \
                or self.router_replicas < 1:
            raise ConfigError(f"router_replicas must be an integer >= 1, got "
                              f"{self.router_replicas!r}")
        if self.adapters < 0:
            raise ConfigError(f"adapters must be >= 0, got {self.adapters}")
        if self.adapters and self.index == "exact":
            raise ConfigError("adapters need the approximate index: the simulated engines "
                              "keep one cache for every adapter and their events name none")
        if not 0.0 <= self.stream_share <= 1.0:
            raise ConfigError(f"stream_share must be in [0, 1], got {self.stream_share!r}")
        check_max_tokens(self.max_tokens)
        if not self.event_delay >= 0 or self.block_size < 1:  # NaN fails too
            raise ConfigError("need an event delay >= 0 s and a block size >= 1 token")
        self.worker_config()  # validates the worker's fields and the eviction policy
        self.routing_policy()  # the policy validates its parameters

    def routing_policy(self, replica: int = 0) -> RoutingPolicy:
        return make_router_policy(self.routing, self.routing_args,
                                  seed=self.seed + 7919 * replica)

    def worker_config(self) -> WorkerConfig:
        return WorkerConfig(capacity=self.capacity, eviction=self.eviction,
                            eviction_args=self.eviction_args,
                            chunk_size=self.chunk_size, max_running=self.max_running,
                            max_loras=self.max_loras, mixed_chunk=self.mixed_chunk)

    def step_model(self) -> StepModel:
        return self.model if self.model is not None else load_profile(self.profile)

    def worker_models(self) -> list[StepModel]:
        """Each worker's step model: the profile at the worker's speed."""
        model = self.step_model()
        return [model.at_speed(s) for s in self.speeds or (1.0,) * self.workers]

    @property
    def speed_sum(self) -> float:
        """The cluster's capacity in workers of the profile's speed (for ``--load``)."""
        return float(sum(self.speeds)) if self.speeds else float(self.workers)

    def describe(self) -> dict[str, Any]:
        out = asdict(self)
        out["model"] = self.step_model().to_dict()
        return out


@dataclass
class SimResult:
    workload: str
    config: SimConfig
    records: Records
    load: np.ndarray = field(repr=False)  # rows: time, worker, waiting, running, pool use
    in_system: np.ndarray = field(repr=False)  # requests on the workers at each arrival
    capacity: int
    wall_s: float
    events: int
    worker_stats: list[dict[str, float]]  # busy_s, steps, prefill_tokens, decode_tokens
    ceilings: Ceilings | None = None
    routing_telemetry: dict[str, Any] = field(default_factory=dict)  # policy.telemetry()

    @property
    def sim_time(self) -> float:
        return float(self.records["finish"].max()) if len(self.records) else 0.0

    def summary(self) -> dict[str, Any]:
        out = self.records.summary(self.config.workers)
        for w, stats in enumerate(self.worker_stats):
            out["per_worker"][w].update(stats)
            out["per_worker"][w]["busy_fraction"] = (stats["busy_s"] / self.sim_time
                                                     if self.sim_time else 0.0)
        if self.ceilings is not None:
            out["ceiling_infinite"] = self.ceilings.infinite
            out["ceiling_optimal"] = self.ceilings.optimal
        if self.routing_telemetry:
            out["routing_telemetry"] = self.routing_telemetry
        out["wall_s"] = self.wall_s
        out["events"] = self.events
        out["sim_per_wall"] = self.sim_time / self.wall_s if self.wall_s > 0 else float("inf")
        return out

    def to_json(self, load_points: int = 2000) -> dict[str, Any]:
        """Everything needed to compare runs: config, summary, per-request columns, load."""
        step = max(1, len(self.load) // load_points)
        return {
            "workload": self.workload,
            "config": self.config.describe(),
            "summary": self.summary(),
            "requests": {k: v.tolist() for k, v in self.records.columns.items()},
            "load": {"columns": ["time", "worker", "waiting", "running", "pool_use"],
                     "rows": self.load[::step].tolist()},
        }


def worker_seed(seed: int, worker: int) -> int:
    """The seed of worker ``worker``'s eviction policy in a run seeded ``seed``."""
    return seed * 1_000_003 + worker


def check_fits(workload: Iterable[Request], capacity: int, name: str = "") -> None:
    """Refuse, before anything runs, a workload with a request that needs more KV tokens
    (prompt and output) than one worker's pool: the simulator cannot place it. The error
    counts them and names the largest."""
    need, rid, over, total = 0, 0, 0, 0
    for r in workload:
        n = r.prompt_len + r.output_len
        total += 1
        over += n > capacity
        if n > need:
            need, rid = n, r.rid
    if over:
        many = f" ({over:,} of {total:,} requests do not fit)" if over > 1 else ""
        raise ConfigError(
            f"{name + ': ' if name else ''}request {rid} needs {need:,} KV tokens, more than "
            f"a worker's pool of {capacity:,}{many}; raise --capacity or replay fewer "
            "requests")


def simulate(workload: Workload, config: SimConfig | None = None, *, ceilings: bool = False,
             progress: Callable[[int], None] | None = None) -> SimResult:
    """Run ``workload`` through the simulated cluster; see the module docstring."""
    cfg = config or SimConfig()
    models = cfg.worker_models()
    wcfg = cfg.worker_config()
    loop = EventLoop()
    rows: list[tuple[float, ...]] = []
    load = array("d")  # 5 doubles per sample: 40 bytes, not a tuple of 5 objects
    dispatches: dict[int, Dispatch] = {}
    in_system: list[int] = []
    sent: list[Request] = []  # closed loop: the realised order, for the ceilings
    closed = workload if isinstance(workload, ClosedLoop) else None
    sessions: deque[list[Request]] = deque(closed.sessions if closed else [])
    next_turn: dict[int, tuple[list[Request], int]] = {}  # rid -> (session, index of next)
    parked: dict[int, list[Request]] = {}  # open loop: rid -> requests waiting for it
    parked_rids: set[int] = set()  # requests waiting, for a completion or their pace
    sent_at: dict[int, float] = {}  # open loop: when each request was sent

    def on_step(worker: SimWorker) -> None:
        usage = worker.used_tokens / worker.capacity
        load.extend((loop.now, worker.index, len(worker.waiting), worker.running, usage))
        report(worker)
        release()

    def report(worker: SimWorker) -> None:
        for router in routers:
            router.report_load(worker.index, running=worker.running,
                               waiting=len(worker.waiting),
                               kv_usage=worker.held_tokens / worker.capacity,
                               kv_capacity=worker.capacity,
                               max_running=worker.config.max_running or 0,
                               max_loras=worker.config.max_loras or 0)

    def on_first_token(job: Job) -> None:
        d = dispatches[job.req.rid]
        if d.req.streamed:
            routers[owner[job.req.rid]].first_token(d, loop.now)
            release()

    def on_finish(job: Job) -> None:
        now = loop.now
        req = job.req
        d = dispatches.pop(req.rid)
        router = routers[owner.pop(req.rid)]
        if req.output_tokens is not None:  # a reply a later prompt may hold (unique ids: none)
            router.replied(d, np.concatenate([req.tokens, req.output_tokens]), now)
        router.complete(d, now, ok=True,
                        ttft_s=job.first_token - d.sent_at if d.req.streamed else None,
                        cached_tokens=job.cached if cfg.report_cached else None,
                        prompt_tokens=req.prompt_len, output_tokens=req.output_len)
        rows.append((req.rid, req.session, job.worker, job.queued, job.start, job.first_token,
                     job.finish, req.prompt_len, job.cached, req.output_len))
        release()
        if progress is not None:
            progress(len(rows))
        for follower in parked.pop(req.rid, ()):  # the reply they follow is in
            loop.at(max(now, sent_at[req.rid] + follower.pace), ARRIVAL, dispatch, follower)
        if closed is not None:
            session, k = next_turn.pop(req.rid)
            if k < len(session):
                loop.at(now + closed.think_time, ARRIVAL, send, session, k)
            else:
                start_session(now + closed.think_time)

    workers = [SimWorker(i, models[i], wcfg, loop, on_finish, seed=worker_seed(cfg.seed, i),
                         on_step=on_step, on_first_token=on_first_token)
               for i in range(cfg.workers)]
    for w in workers:
        w.debug = cfg.debug
    routers = [Router(cfg.routing_policy(r), cfg.workers, probes=workers)
               for r in range(cfg.router_replicas)]
    holds: list[HoldQueue[Request]] = [HoldQueue(router) for router in routers]
    for w in workers:  # what a live router's first scrape reads, before any request
        report(w)
    owner: dict[int, int] = {}  # rid -> the replica that routed it
    turns = itertools.count()
    if cfg.index == "exact":
        from kvroute.sim.exact_index import attach_exact_indexes

        attach_exact_indexes(routers, workers, loop, cfg.event_delay, cfg.block_size)

    share = cfg.stream_share
    streams = np.random.default_rng([cfg.seed, 7]) if 0.0 < share < 1.0 else None

    def dispatch(req: Request) -> None:
        parked_rids.discard(req.rid)
        if closed is None:
            sent_at[req.rid] = loop.now
        if req.rid in dispatches or req.rid in owner:
            raise ConfigError(f"request id {req.rid} is used twice in workload "
                              f"{workload.name!r}")
        if not workers[0].fits(req):
            raise ConfigError(
                f"request {req.rid} needs {req.prompt_len + req.output_len:,} KV tokens, "
                f"more than a worker's pool of {workers[0].capacity:,}; raise --capacity")
        streamed = share >= 1.0 if streams is None else bool(streams.random() < share)
        if cfg.adapters and req.adapter is None:
            req = replace(req, adapter=adapter_for(req.tokens, cfg.adapters, cfg.seed))
        r = owner[req.rid] = next(turns) % len(routers)  # the replicas in turn
        route_req = RouteRequest(req.tokens, req.rid, req.session,
                                 max_tokens_sent(cfg.max_tokens, req.output_len), streamed,
                                 adapter=req.adapter)
        if holds[r].offer(route_req, req, loop.now):
            parked_rids.add(req.rid)  # held by its router: not sent yet
        else:
            send_to_worker(req, route_req, r, loop.now)

    def release() -> None:
        """Route what the routers' policies no longer hold (``HoldQueue``)."""
        for r, queue in enumerate(holds):
            if queue:
                while (held := queue.release(loop.now)) is not None:
                    route_req, req, since = held
                    parked_rids.discard(req.rid)
                    send_to_worker(req, route_req, r, since)

    def send_to_worker(req: Request, route_req: RouteRequest, r: int, since: float) -> None:
        d = routers[r].route(route_req, loop.now)
        # the simulator never calls router.undelivered, the one reader of the prompt after
        # routing: the dispatch keeps its length only (a zero-stride stand-in), so a long
        # backlog does not hold every prompt (the worker parks its own copy compactly)
        d.req.units = np.broadcast_to(np.int64(0), (len(d.req.units),))
        dispatches[req.rid] = d
        in_system.append(sum(len(w.waiting) + w.running for w in workers))
        workers[d.worker].submit(Job(req, d.worker, since))  # queued since it was sent

    if closed is None:
        assert isinstance(workload, OpenLoop)
        arrivals: Iterator[Request] = iter(workload)
        last = [0.0]

        def arrive(req: Request) -> None:
            # an earlier request it follows is still queued, running or itself waiting
            if not 0 <= req.after < req.rid:
                dispatch(req)
            elif req.after in dispatches or req.after in parked_rids:
                parked.setdefault(req.after, []).append(req)
                parked_rids.add(req.rid)
            else:  # what it follows is complete: at its user's pace from that one's send
                at = sent_at[req.after] + req.pace
                if at > loop.now:
                    parked_rids.add(req.rid)
                    loop.at(at, ARRIVAL, dispatch, req)
                else:
                    dispatch(req)
            nxt = next(arrivals, None)
            if nxt is not None:
                if nxt.arrival < last[0]:
                    raise ConfigError(f"workload {workload.name!r} is not in arrival order "
                                      f"(request {nxt.rid} at {nxt.arrival} s)")
                last[0] = nxt.arrival
                loop.at(nxt.arrival, ARRIVAL, arrive, nxt)

        first = next(arrivals, None)
        if first is not None:
            if first.arrival < 0:
                raise ConfigError(f"request {first.rid} arrives at {first.arrival} s < 0")
            last[0] = first.arrival
            loop.at(first.arrival, ARRIVAL, arrive, first)
    else:
        def send(session: list[Request], k: int) -> None:
            req = session[k]
            next_turn[req.rid] = (session, k + 1)
            sent.append(req)
            dispatch(req)

        def start_session(at: float) -> None:
            if sessions:
                loop.at(at, ARRIVAL, send, sessions.popleft(), 0)

        for _ in range(closed.concurrency):
            start_session(0.0)

    wall = time.perf_counter()
    loop.run()
    wall = time.perf_counter() - wall
    if dispatches or parked_rids:  # cannot happen unless a worker model is broken; never
        lost = sorted(set(dispatches) | parked_rids)  # lose requests
        raise ConfigError(f"{len(lost)} requests never finished (ids {lost[:5]}...)")
    capacity = workers[0].capacity
    result = SimResult(workload.name, cfg, Records.from_rows(rows),
                       np.frombuffer(load, dtype=np.float64).reshape(-1, 5),
                       np.array(in_system, dtype=np.int64), capacity, wall,
                       loop.processed, [w.stats() for w in workers],
                       routing_telemetry=routers[0].policy.telemetry())
    if ceilings:
        result.ceilings = request_ceilings(sent if closed is not None else workload,
                                           capacity, cfg.workers)
    return result


def request_ceilings(requests: Iterable[Request], capacity: int, workers: int) -> Ceilings:
    """The ceilings of ``requests`` served in that order, each caching its prompt and
    output; the requests are read once, one at a time, and kept as runs when that is
    compact (:func:`kvroute.cache.ceilings.compact_requests`)."""
    prompts, inserts = compact_requests(
        (r.tokens, np.concatenate([r.tokens, output_ids(r)])) for r in requests)
    return hit_rate_ceilings(prompts, capacity, workers=workers, inserts=inserts)
