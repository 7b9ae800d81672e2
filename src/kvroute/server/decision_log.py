"""The live router's decision log: one JSON line per routing decision and per outcome.

Contract:

* ``DecisionLog(path)`` appends to ``path`` (ConfigError when it cannot be opened);
  ``DecisionLog(None)`` writes nothing, and its methods return at once (``enabled`` is
  False), so callers need not check.
* ``decision(...)``: ``{"event": "decision", "t", "wall", "rid", "attempt", "worker",
  "branch", "predicted_s", "units", "held_s", "matched": {url: units}, "in_flight": {url:
  n}}``, with ``t`` the router's clock, ``wall`` the Unix time, ``held_s`` the seconds the
  policy held the request back before this attempt (late binding; 0 for most, and for
  retries), ``matched`` what the router's prefix index believed each worker held before
  the decision and ``in_flight`` the router's counts after it.
* ``outcome(...)``: ``{"event": "outcome", "t", "rid", "worker", "ok", "error", "e2e_s",
  "ttft_s", "cached_tokens"}`` (``e2e_s`` only when ok).
* Each line is flushed as it is written; ``close()`` closes the file.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import IO, Any

import numpy as np

from kvroute.errors import ConfigError
from kvroute.routing.base import RouteRequest, WorkerState
from kvroute.routing.router import Dispatch
from kvroute.server.membership import Worker

__all__ = ["DecisionLog"]


class DecisionLog:
    def __init__(self, path: str | None) -> None:
        self._file: IO[str] | None = None
        if path:
            try:
                self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115
            except OSError as e:
                raise ConfigError(f"{path}: cannot open the decision log "
                                  f"({e.strerror})") from e

    @property
    def enabled(self) -> bool:
        return self._file is not None

    def decision(self, now: float, req: RouteRequest, attempt: int, d: Dispatch, url: str,
                 workers: Sequence[Worker], matched: np.ndarray,
                 states: Sequence[WorkerState], held: float = 0.0) -> None:
        if self._file is None:
            return
        dec = d.decision
        self._write({
            "event": "decision", "t": round(now, 6), "wall": time.time(), "rid": req.rid,
            "attempt": attempt, "worker": url, "branch": dec.branch,
            "predicted_s": dec.predicted_s, "units": len(req), "held_s": round(held, 6),
            "matched": {x.url: int(c) for x, c in zip(workers, matched, strict=False)},
            "in_flight": {x.url: s.in_flight for x, s in zip(workers, states, strict=True)},
        })

    def outcome(self, now: float, d: Dispatch, url: str, ok: bool, error: str | None,
                ttft_s: float | None = None, cached: int | None = None) -> None:
        if self._file is None:
            return
        self._write({"event": "outcome", "t": round(now, 6), "rid": d.req.rid,
                     "worker": url, "ok": ok, "error": error,
                     "e2e_s": round(now - d.sent_at, 6) if ok else None,
                     "ttft_s": None if ttft_s is None else round(ttft_s, 6),
                     "cached_tokens": cached})

    def _write(self, record: dict[str, Any]) -> None:
        assert self._file is not None
        self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
