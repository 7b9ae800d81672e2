"""What the router believes each worker has cached: exact where the engine says, else
learned from routing history.

The :class:`~kvroute.routing.router.Router` owns one :class:`CacheBeliefs`; every reader
of a prefix match (the policy's ``view.matched``, the router's ``matched``, telemetry)
goes through it, so there is one mechanism whatever the source.

Contract:

* Sources. The approximate :class:`~kvroute.routing.prefix_index.PrefixIndex` (one tree
  for every worker, learned from routing; ``None`` when nobody reads matches) answers for
  all workers in one walk. A worker may also have an *exact* source (:class:`ExactCache`:
  e.g. a :class:`kvroute.events.BlockIndex` fed by the engine's KV events), attached and
  detached by the router (``attach`` / ``detach``).
* ``match(units, now)``: per worker, the prefix units held: from its exact source while
  that source is ``in_sync`` (raised to the longest common prefix with a prompt in flight
  there, see below), else from the approximate index (0 without one).
  ``sizes()``: the same choice for the units each worker holds. ``exact(w)``: whether
  worker ``w`` answers from an exact source right now. ``match_last_sent(units, now)``:
  ``match`` and, from the same walk, when each worker was last sent its longest prefix
  of ``units``, from the approximate index's routing history (an exact source says what
  is held, not when it was last asked for).
* In flight. An engine reports a prompt only once it has computed it, but a prompt routed
  to a worker is there for whatever arrives after it (requests run and are admitted in
  order, and a running request's blocks cannot be evicted). So the router declares each
  prompt it sends to a worker with an exact source (``sent(w, key, units)``) until the
  dispatch closes (``done(w, key)``), and an exact worker's match is the larger of its
  source's and the longest common prefix with those prompts (token-granular).
* The approximate index keeps learning from routing for every worker, exact or not, so a
  worker whose events fall out of sync falls back to a warm approximate view at once.
* Membership: ``add_worker`` / ``remove_worker(i)`` keep the per-worker list (and the
  approximate index's tenants) in the router's numbering; a removed worker's exact source
  is dropped. ``clear(w)`` empties only the approximate belief: an exact source follows
  its engine (a restart arrives as an event).
* Units must be what the exact sources key on: the engines' token ids.
* Adapters: every query and ``sent`` take the LoRA ``adapter`` a prompt is for (None:
  the base model); the approximate index files each adapter's prompts apart, an exact
  source is asked for that adapter's blocks, and only prompts in flight for the same
  adapter count.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from kvroute.routing.prefix_index import PrefixIndex

__all__ = ["CacheBeliefs", "ExactCache"]


def _common(a: np.ndarray, b: np.ndarray) -> int:
    n = min(len(a), len(b))
    if n == 0:
        return 0
    diff = a[:n] != b[:n]
    i = int(diff.argmax())
    return i if diff[i] else n


class ExactCache(Protocol):
    """One worker's exact cache state (an engine's KV events applied in order)."""

    @property
    def in_sync(self) -> bool:
        """True while nothing is known to be missing: only then is it believed."""

    def match(self, units: np.ndarray, adapter: str | None = None) -> int:
        """Leading units of ``units`` (token ids, a prompt for ``adapter``) the worker
        holds."""

    def held(self) -> int:
        """Units (tokens) the worker holds."""


class CacheBeliefs:
    """Per-worker prefix matches from exact sources or the approximate index."""

    def __init__(self, approx: PrefixIndex | None, workers: int) -> None:
        self.approx = approx
        self._exact: list[ExactCache | None] = [None] * workers
        self._sent: list[dict[int, tuple[np.ndarray, str | None]]] = [
            {} for _ in range(workers)]

    def __len__(self) -> int:
        return len(self._exact)

    # --- sources ----------------------------------------------------------------------
    def attach(self, worker: int, source: ExactCache) -> None:
        self._exact[worker] = source

    def detach(self, worker: int) -> None:
        self._exact[worker] = None

    def source(self, worker: int) -> ExactCache | None:
        return self._exact[worker]

    @property
    def blind(self) -> bool:
        """No source at all: every match is 0."""
        return self.approx is None and not any(self._exact)

    def exact(self, worker: int) -> bool:
        """Worker ``worker`` answers from an in-sync exact source now."""
        src = self._exact[worker]
        return src is not None and src.in_sync

    def sent(self, worker: int, key: int, units: np.ndarray,
             adapter: str | None = None) -> None:
        """A prompt routed to ``worker`` (kept only where an exact source is attached)."""
        if self._exact[worker] is not None:
            self._sent[worker][key] = (units, adapter)

    def done(self, worker: int, key: int) -> None:
        """The dispatch ``key`` on ``worker`` closed."""
        self._sent[worker].pop(key, None)

    # --- membership -------------------------------------------------------------------
    def add_worker(self) -> None:
        self._exact.append(None)
        self._sent.append({})
        if self.approx is not None:
            self.approx.add_worker()

    def remove_worker(self, worker: int) -> None:
        del self._exact[worker]
        del self._sent[worker]
        if self.approx is not None:
            self.approx.remove_worker(worker)

    def clear(self, worker: int) -> None:
        if self.approx is not None:
            self.approx.clear(worker)

    # --- queries ----------------------------------------------------------------------
    def match(self, units: np.ndarray, now: float = 0.0,
              adapter: str | None = None) -> np.ndarray:
        """Prefix units of ``units`` each worker is believed to hold (see the module doc)."""
        out = (self.approx.match(units, now, adapter) if self.approx is not None
               else np.zeros(len(self._exact), dtype=np.int64))
        return self._exact_matches(units, adapter, out)

    def match_last_sent(self, units: np.ndarray, now: float = 0.0,
                        adapter: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``match(units, now, adapter)`` and, per worker, when the router last sent it
        the longest prefix of ``units`` it is believed to hold, from the approximate index
        (routing history, kept for every worker; -inf where unknown): one walk for both."""
        if self.approx is None:
            return self.match(units, now, adapter), np.full(len(self._exact), -np.inf)
        out, times = self.approx.match_last_sent(units, now, adapter)
        return self._exact_matches(units, adapter, out), times

    def _exact_matches(self, units: np.ndarray, adapter: str | None,
                       out: np.ndarray) -> np.ndarray:
        """``out`` (the approximate matches) with each in-sync exact worker's own."""
        for w, src in enumerate(self._exact):
            if src is not None and src.in_sync:
                held = src.match(units, adapter)
                for prompt, of in self._sent[w].values():
                    if of == adapter:
                        held = max(held, _common(prompt, units))
                out[w] = held
        return out

    def approx_match(self, units: np.ndarray, worker: int,
                     adapter: str | None = None) -> int:
        """The approximate index's match alone, for one worker (0 without an index)."""
        return 0 if self.approx is None else int(self.approx.match(units, 0.0,
                                                                   adapter)[worker])

    def sizes(self) -> np.ndarray:
        """Units each worker is believed to hold."""
        out = (self.approx.sizes() if self.approx is not None
               else np.zeros(len(self._exact), dtype=np.int64))
        for w, src in enumerate(self._exact):
            if src is not None and src.in_sync:
                out[w] = src.held()
        return out
