"""The routing-policy protocol: what a policy sees, what it returns, what it learns from.

Contract:

* A policy is a plain object built with its parameters and a seed. It never reads the
  wall clock or a global RNG: time arrives as ``view.now`` (seconds, simulated or real)
  and randomness from the ``numpy.random.Generator`` it was given.
* ``route(req, view)`` returns a :class:`Decision` naming one of ``view.candidates()``
  (the workers the router allows for this request; all of them in the simulator). The view
  is read-only: router-counted in-flight requests and prompt units per worker, how many
  requests each worker was sent, and what the router's prefix index believes each worker
  has cached (``view.matched(req)``). Policies must not keep references to it between
  calls beyond what they need; the router owns membership and accounting.
* ``on_complete(fb)`` is called exactly once per routed request, with ``fb.ok`` false for
  errors, disconnects and timeouts (no latency then).
* The same objects run in the simulator and in the live router: nothing here knows which.
* Capabilities are class attributes (``uses_index``, ``records_replies``, ``needs_probes``,
  ``takes_seed``):
  the router and the command lines read them, never a policy's name. A policy is one
  module of :mod:`kvroute.routing` that registers its class (``@register``); the registry
  finds it, and its constructor's keyword parameters are what ``--policy-arg`` can set.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

import numpy as np

__all__ = ["ClusterView", "Decision", "Feedback", "PrefixSource", "RouteRequest",
           "RoutingPolicy", "WorkerProbe", "WorkerState"]


@dataclass(eq=False)
class RouteRequest:
    """A request as the router sees it: its prompt in units (token ids or characters)."""

    units: np.ndarray = field(repr=False)  # 1-D ints: int64 token ids, or uint8/uint32 chars
    rid: int = -1
    session: int | None = None
    max_tokens: int | None = None
    # whether the router will see its first token (``Router.first_token``): a client that
    # does not stream, or a front end without the hook (Ray Serve), gives only the end
    streamed: bool = True
    # the LoRA adapter the prompt is for (None: the base model). Engines key their prefix
    # caches by adapter: prompts of different adapters share no cached prefix, and the
    # router's prefix index holds them apart (``PrefixIndex``'s ``adapter``)
    adapter: str | None = None
    # what the prefix index gave for it (``ClusterView.matched`` / ``last_sent``), kept
    # for the decision that follows
    _matched: np.ndarray | None = field(default=None, repr=False)
    _last_sent: np.ndarray | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.units)

    def forget_matches(self) -> None:
        """Drop what the index gave for it: it is routed later, when the index may differ."""
        self._matched = self._last_sent = None


@dataclass(frozen=True)
class Decision:
    worker: int
    branch: str = ""  # which rule of the policy decided (telemetry)
    predicted_s: float | None = None  # the policy's latency prediction, if it makes one


@dataclass(frozen=True)
class Feedback:
    worker: int
    rid: int
    ok: bool
    prompt_units: int
    now: float
    decision: Decision
    e2e_s: float | None = None
    ttft_s: float | None = None
    cached_tokens: int | None = None  # as the engine reports it, when it does
    # the same in the router's units (what ``view.matched`` counts): the router scales it
    # by the prompt's units over the engine's prompt tokens when the engine reports those
    # (a router keyed on characters in front of a real tokenizer); by default
    # ``cached_tokens`` as is (the units are the engine's tokens)
    cached_units: int | None = None
    # tokens the request generated, when the engine's reply says (usage.completion_tokens;
    # the simulator: always)
    output_tokens: int | None = None

    def __post_init__(self) -> None:
        if self.cached_units is None:
            object.__setattr__(self, "cached_units", self.cached_tokens)


@dataclass
class WorkerState:
    """What the router knows about one worker.

    The first group is the router's own accounting, exact by construction. The second is
    what the engine reports about itself (the simulator refreshes it at every engine step;
    the live router scrapes it, so it can be stale); ``kv_capacity`` 0 means unknown, and
    ``max_running`` 0 that no cap on running requests is known, ``max_loras`` 0 that no
    cap on the LoRA adapters running at once is.
    Only the router writes either group (``Router.report_load`` for the second).
    """

    index: int
    in_flight: int = 0  # routed and not yet closed
    prefill_units: int = 0  # prompt units of in-flight requests without a first token yet
    decode_units: int = 0  # prompt units of in-flight requests past their first token
    # of prefill_units, those of requests whose first token the router will not see
    # (RouteRequest.streamed False): they count as prefilling until they complete
    unstreamed_units: int = 0
    routed: int = 0
    completed: int = 0
    errors: int = 0
    # in-flight requests per LoRA adapter (``RouteRequest.adapter``; none for the base model)
    adapters: dict[str, int] = field(default_factory=dict)
    # engine-reported
    running: int = 0
    waiting: int = 0
    kv_usage: float = 0.0  # fraction of the KV pool in use
    kv_capacity: int = 0
    max_running: int = 0  # the engine's cap on requests running at once (0: none known)
    max_loras: int = 0  # its cap on distinct LoRA adapters running at once (0: none known)


class WorkerProbe(Protocol):
    """Exact knowledge of a worker, which only a simulator has (for the ``oracle``)."""

    def predict_e2e(self, tokens: np.ndarray, output_len: int) -> float:
        """Seconds this request would take end to end if it were sent to the worker now."""


class PrefixSource(Protocol):
    """What a view reads prefix matches from: the router's
    :class:`~kvroute.routing.cache_beliefs.CacheBeliefs` (exact per worker where the
    engines publish KV events, else approximate), or a bare
    :class:`~kvroute.routing.prefix_index.PrefixIndex` in tests."""

    def match(self, units: np.ndarray, now: float = 0.0,
              adapter: str | None = None) -> np.ndarray:
        """Prefix units of ``units`` (a prompt for ``adapter``) each worker holds."""

    def sizes(self) -> np.ndarray:
        """Units each worker holds."""

    def match_last_sent(self, units: np.ndarray, now: float = 0.0,
                        adapter: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``match(units, now, adapter)`` and, per worker, when it was last sent the
        longest prefix of ``units`` it holds (-inf where it holds none or nobody knows)."""


class ClusterView:
    """A read-only window on the router's state, handed to ``RoutingPolicy.route``.

    Per-worker quantities (``workers``, ``in_flight()``, ``matched(req)``,
    ``index_sizes()``) cover every member, indexed as the router numbers them.
    ``probes`` is None except in the simulator, which can see the workers' true state.
    ``units_per_token``: the router's units per engine token (``Router.units_per_token``:
    over the replies that reported their prompt tokens; None before any did).

    Allowed workers: a routing call may be restricted to some workers (the live router
    leaves out unhealthy ones and those that already failed this request). ``allowed`` is
    the boolean mask, ``candidates()`` the allowed indices in ascending order; a policy
    must return one of them, and takes whatever it compares across workers (load
    balance, normalisations, ties, random draws) over the candidates only. ``argmin`` and
    ``argmax`` give the lowest-index candidate with the least or greatest value. With
    every worker allowed (the simulator, always) these are exactly numpy's ``argmin``,
    ``argmax`` and ``arange(len(view))``, so a policy decides as if there were no mask.
    """

    def __init__(self, workers: Sequence[WorkerState], index: PrefixSource | None,
                 probes: Sequence[WorkerProbe] | None = None,
                 allowed: Sequence[bool] | np.ndarray | None = None) -> None:
        self._workers = workers
        self._index = index
        self.probes = probes
        self.now = 0.0
        self.units_per_token: float | None = None
        self._mask: np.ndarray | None = None  # None: every worker is allowed
        self._candidates: np.ndarray | None = None
        self.allow(allowed)

    def __len__(self) -> int:
        return len(self._workers)

    @property
    def workers(self) -> Sequence[WorkerState]:
        return self._workers

    def allow(self, allowed: Sequence[bool] | np.ndarray | None) -> None:
        """Restrict the next decisions to the workers where ``allowed`` is true (None:
        every worker). The router calls this before each decision; policies only read.
        ValueError when the mask has the wrong length or allows no worker."""
        if allowed is None:
            self._mask = self._candidates = None
            return
        mask = np.array(allowed, dtype=bool)
        if mask.shape != (len(self._workers),):
            raise ValueError(f"the allowed mask has {mask.size} entries for "
                              f"{len(self._workers)} workers")
        if mask.all():
            self._mask = self._candidates = None
            return
        candidates = np.flatnonzero(mask)
        if len(candidates) == 0:
            raise ValueError("no worker is allowed for this request")
        mask.flags.writeable = False
        candidates.flags.writeable = False
        self._mask, self._candidates = mask, candidates

    @property
    def allowed(self) -> np.ndarray:
        """True for each worker a decision may name."""
        if self._mask is None:
            return np.ones(len(self._workers), dtype=bool)
        return self._mask

    def candidates(self) -> np.ndarray:
        """The allowed workers' indices, ascending (int64)."""
        if self._candidates is None:
            return np.arange(len(self._workers), dtype=np.int64)
        return self._candidates

    def argmin(self, values: np.ndarray | list[float]) -> int:
        """The allowed worker with the least ``values[w]`` (ties: the lowest index)."""
        if isinstance(values, list):  # no numpy call for a list
            if self._candidates is None:
                return values.index(min(values))
            return int(min(self._candidates.tolist(), key=values.__getitem__))
        if self._candidates is None:
            return int(np.asarray(values).argmin())
        return int(self._candidates[np.argmin(values[self._candidates])])

    def argmax(self, values: np.ndarray) -> int:
        """The allowed worker with the greatest ``values[w]`` (ties: the lowest index)."""
        if self._candidates is None:
            return int(np.asarray(values).argmax())
        return int(self._candidates[np.argmax(values[self._candidates])])

    def in_flight(self) -> np.ndarray:
        return np.array([w.in_flight for w in self._workers], dtype=np.int64)

    def matched(self, req: RouteRequest) -> np.ndarray:
        """Prefix units of ``req`` the router believes each worker holds (computed once)."""
        if self._index is None:
            raise RuntimeError("this policy did not declare uses_index = True")
        if req._matched is None:
            req._matched = self._index.match(req.units, self.now, req.adapter)
        return req._matched

    def last_sent(self, req: RouteRequest) -> np.ndarray:
        """Per worker, when the router last sent it the longest prefix of ``req`` it is
        believed to hold (seconds on the router's clock; -inf where none): of several
        workers holding the same prefix, the freshest copy is the last sent. Computed
        once; asked before ``matched(req)``, one walk of the index gives both."""
        if self._index is None:
            raise RuntimeError("this policy did not declare uses_index = True")
        if req._last_sent is None:
            matched, req._last_sent = self._index.match_last_sent(req.units, self.now,
                                                                  req.adapter)
            if req._matched is None:
                req._matched = matched
        return req._last_sent

    def index_sizes(self) -> np.ndarray:
        """Units in the router's prefix index per worker (the 'tree size')."""
        if self._index is None:
            raise RuntimeError("this policy did not declare uses_index = True")
        return self._index.sizes()


class RoutingPolicy(ABC):
    """Base of every routing policy. Subclasses set ``name`` and register themselves."""

    name: ClassVar[str] = ""
    # capabilities, read by the router and the command lines (never a check on ``name``):
    uses_index: ClassVar[bool] = False  # the router keeps a prefix index for this policy
    # the index also records each reply after its prompt (``Router.replied``): a
    # conversation's next turn then matches the reply its worker cached as well
    records_replies: ClassVar[bool] = False
    needs_probes: ClassVar[bool] = False  # reads ``view.probes``: runs only in the simulator
    takes_seed: ClassVar[bool] = True  # the constructor takes ``seed``
    describe_needs: ClassVar[str] = ""  # why it cannot run somewhere, for error messages

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)

    @abstractmethod
    def route(self, req: RouteRequest, view: ClusterView) -> Decision:
        """Pick a worker for ``req``."""

    def holds(self, req: RouteRequest, view: ClusterView) -> bool:
        """True: do not route ``req`` yet (late binding). The router's caller keeps it, first
        come first served among those held (:class:`~kvroute.routing.hold_queue.HoldQueue`),
        and asks again when the router's state changes (a first token, a completion, a
        routing decision; the simulator at every engine step too) and at least every
        ``HOLD_RECHECK_S`` seconds.
        A policy that holds must release every request once its workers' queued prefills
        are done. False by default: every request is routed when it arrives."""
        return False

    def on_first_token(self, rid: int, worker: int, now: float) -> None:  # noqa: B027
        """Request ``rid``'s first token came back from ``worker`` at ``now`` (streamed
        requests only; at most once, before its ``on_complete``). Optional hook."""

    def on_complete(self, fb: Feedback) -> None:  # noqa: B027 - optional hook
        """Learn from a finished (or failed) request."""

    def telemetry(self) -> dict[str, object]:
        """What the policy reports about itself (e.g. prediction error); {} by default."""
        return {}

    def on_workers_changed(self, count: int) -> None:  # noqa: B027 - optional hook
        """The router's membership changed; ``count`` workers now."""

    def on_worker_removed(self, index: int, count: int) -> None:
        """Worker ``index`` left; later workers moved down one index; ``count`` remain.
        Policies with per-worker state drop that worker's entry; the default just calls
        ``on_workers_changed``."""
        self.on_workers_changed(count)
