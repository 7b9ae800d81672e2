"""The request objects every workload yields, and the two ways they arrive.

Contract:

* A :class:`Request` is one prompt (token ids) with the number of tokens to generate.
  ``arrival`` is in seconds from the start of the run for open-loop workloads; closed-loop
  drivers ignore it and send each turn when the previous one has been answered.
* ``output_tokens`` are the ids the worker "generates". Multi-turn workloads fix them in
  advance because the next turn resends them as history; when they are ``None``,
  :func:`output_ids` gives ids unique to the request (negative, so they never collide
  with a vocabulary and never create a false shared prefix).
* :class:`OpenLoop` is re-iterable (each iteration replays the same requests in arrival
  order; a loader may build them lazily so that a long trace never sits in memory). A
  request whose ``after`` names an earlier request of the run (its ``rid``, smaller than
  its own) is sent at the latest of its ``arrival``, ``pace`` seconds after that one was
  sent, and that one's completion: a conversation's next turn, which its user writes
  after reading the reply, at the user's own pace (which a replay's time scale leaves
  alone). The simulator and the load generator both honour it.
  :class:`ClosedLoop` holds sessions (lists of turns); ``concurrency`` clients each take
  the next unstarted session and send its turns one after another, waiting for each
  reply plus ``think_time`` seconds.
* What a client tells the engine of a request's output (:func:`max_tokens_sent`, the
  simulator's and the load generator's ``--max-tokens``): ``"exact"``, its output as
  ``max_tokens`` (benchmark clients, with ``ignore_eos``); ``"none"``, nothing; ``"N"``,
  a cap of N tokens (most chat clients), raised to the output where that is longer, so
  the workload does not change. :func:`check_max_tokens` refuses anything else.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kvroute.errors import ConfigError

__all__ = ["ClosedLoop", "OpenLoop", "Request", "Workload", "check_max_tokens",
           "max_tokens_sent", "output_ids", "poisson_arrivals"]


@dataclass(eq=False)
class Request:
    rid: int
    tokens: np.ndarray = field(repr=False)  # prompt ids, 1-D int64
    output_len: int
    arrival: float = 0.0
    session: int = -1  # group, client or document the request belongs to
    turn: int = 0  # position within its session
    output_tokens: np.ndarray | None = field(default=None, repr=False)
    text: str | None = field(default=None, repr=False)  # prompt text, when there is one
    messages: list[dict[str, str]] | None = field(default=None, repr=False)  # chat form
    after: int = -1  # open loop: the rid of an earlier request it waits for (above)
    pace: float = 0.0  # with after: seconds after that one was sent, at the earliest
    adapter: str | None = None  # the LoRA adapter it is for (None: the base model)

    def __post_init__(self) -> None:
        if self.output_len < 1:
            raise ConfigError(f"request {self.rid}: output_len must be >= 1, got {self.output_len}")
        if len(self.tokens) < 1:
            raise ConfigError(f"request {self.rid}: empty prompt")
        if self.output_tokens is not None and len(self.output_tokens) != self.output_len:
            raise ConfigError(f"request {self.rid}: {len(self.output_tokens)} output tokens "
                              f"for output_len {self.output_len}")

    @property
    def prompt_len(self) -> int:
        return len(self.tokens)


def output_ids(req: Request) -> np.ndarray:
    """The ids a worker generates for ``req``: its fixed ``output_tokens``, else unique ids."""
    if req.output_tokens is not None:
        return req.output_tokens
    return -1 - (req.rid * (1 << 24) + np.arange(req.output_len, dtype=np.int64))


def check_max_tokens(mode: str) -> str:
    """``mode`` if it is "exact", "none" or a cap "N" (an integer >= 1), else ConfigError."""
    if mode not in ("exact", "none") and not (mode.isascii() and mode.isdigit()
                                              and int(mode) >= 1):
        raise ConfigError(f"max_tokens must be exact, none or a cap N >= 1 (tokens), got "
                          f"{mode!r}")
    return mode


def max_tokens_sent(mode: str, output_len: int) -> int | None:
    """What a client in ``mode`` sends as ``max_tokens`` for an output of ``output_len``."""
    if mode == "none":
        return None
    return output_len if mode == "exact" else max(int(mode), output_len)


def poisson_arrivals(n: int, rate: float, rng: np.random.Generator) -> np.ndarray:
    """Arrival times (s) of a Poisson process at ``rate`` per second; all 0 if rate is inf."""
    if not rate > 0:
        raise ConfigError(f"rate must be > 0 requests/s (or inf), got {rate}")
    if np.isinf(rate):
        return np.zeros(n)
    return np.cumsum(rng.exponential(1.0 / rate, size=n))


@dataclass(frozen=True)
class OpenLoop:
    """Requests that arrive at given times, whatever the system does."""

    name: str
    source: Callable[[], Iterator[Request]] = field(repr=False)
    size: int | None = None  # number of requests, when known in advance
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, name: str, requests: list[Request], **meta: Any) -> OpenLoop:
        reqs = sorted(requests, key=lambda r: r.arrival)
        return cls(name, lambda: iter(reqs), len(reqs), meta)

    def __iter__(self) -> Iterator[Request]:
        return self.source()


@dataclass(frozen=True)
class ClosedLoop:
    """Sessions of turns sent by ``concurrency`` clients, each waiting for its reply."""

    name: str
    sessions: list[list[Request]] = field(repr=False)
    concurrency: int
    think_time: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ConfigError(f"concurrency must be >= 1, got {self.concurrency}")
        if self.think_time < 0:
            raise ConfigError(f"think_time must be >= 0 s, got {self.think_time}")

    @property
    def size(self) -> int:
        return sum(len(s) for s in self.sessions)

    def __iter__(self) -> Iterator[Request]:
        """Every turn, session by session (not an arrival order)."""
        return (r for s in self.sessions for r in s)


Workload = OpenLoop | ClosedLoop
