"""What the load generator observed: one :class:`RequestResult` per request sent, and the
:class:`BenchRun` that holds them (times in seconds from the start of the run)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["NAN", "BenchRun", "RequestResult"]

NAN = float("nan")


@dataclass
class RequestResult:
    """One sent request, as the client saw it (times in s from the start of the run)."""

    rid: int
    session: int
    turn: int
    api: str
    client: int  # driver coroutine that sent it (-1: the open-loop dispatcher)
    scheduled: float
    sent: float
    first_token: float = NAN
    finish: float = NAN
    ok: bool = False
    status: int | None = None  # HTTP status, None when no response came
    reason: str | None = None  # short failure category ("HTTP 500", "timeout", ...)
    error: str | None = None  # failure detail
    prompt_tokens: int = 0
    cached_tokens: int | None = None  # None: the server did not report it
    output_tokens: int = 0
    usage: bool = False  # prompt/output tokens come from the server's usage report
    worker: str | None = None  # the X-Kvroute-Worker header, when present

    @property
    def ttft(self) -> float:
        return self.first_token - self.sent

    @property
    def e2e(self) -> float:
        return self.finish - self.sent

    def fail(self, reason: str, detail: str, now: float) -> None:
        self.ok, self.reason, self.error = False, reason, detail
        if math.isnan(self.finish):
            self.finish = now

    def to_json(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v)
                for k, v in asdict(self).items()}


@dataclass
class BenchRun:
    """What :func:`kvroute.bench.loadgen.run_bench` observed."""

    results: list[RequestResult]  # in completion order
    planned: int | None  # requests the run meant to send (None: unknown, a lazy trace)
    wall_s: float
    mode: str  # "open", "open-concurrency" or "closed"
    concurrency: int | None
    model: str | None = None
    metrics_before: dict[str, dict[str, float] | str] = field(default_factory=dict)
    metrics_after: dict[str, dict[str, float] | str] = field(default_factory=dict)

    @property
    def unsent(self) -> int | None:
        return None if self.planned is None else self.planned - len(self.results)
