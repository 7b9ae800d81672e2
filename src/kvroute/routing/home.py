"""``Home``: where several routers that share the workers, each knowing only the prefixes
it placed, send a prompt none of them can place by what it knows, so that they agree.

Contract:

* ``place(units, matched, allowed, candidates)``: for a prompt whose index matches
  (``matched``, per worker) are the same on every allowed worker (``allowed``: the mask,
  ``candidates``: its indices; ``common`` units: nothing is known beyond a prefix all of
  them hold, e.g. a shared system prompt or nothing), its *home*: the owner, among the
  allowed workers, of the next ``prefix_units`` (256) units on
  :class:`~kvroute.routing.prefix_hash.PrefixHash`'s ring (``prompt[common:common +
  prefix_units]``). Every router computes the same home for the same prompt and workers,
  whatever it has seen. Returns ``(home, common)``, or None where some worker is known to
  hold more than another.
* ``band``: how much more than the best choice's cost the home may cost and still be
  taken, ``2 s``: ``s`` is the *surprise*, the share of what followed ``common`` that the
  engine reported cached when a prompt was sent home (``learn``), averaged with
  forgetting ``forget`` a sample from a prior of 1/2 worth two samples. A hit there came
  from another router's placement; sending a prompt home buys about that share of its
  own prefill now, and about as much for the next router's request of the same prefix
  later, hence twice. Where the routers' prompts share nothing beyond what all workers
  hold (no surprise), the band closes and the caller's choice stands.
* ``choose(units, matched, allowed, candidates, cost, best)``: the worker to take, given
  the caller's ``cost`` per worker and its best choice: the home where ``place`` finds
  one and ``cost[home] - cost[best] <= band * |cost[best]|``, else ``best``; with the
  units all workers hold when it is the home (-1 otherwise). ``sent`` counts the homes
  taken.
* ``learn(units, common, cached)``: a prompt sent home completed with ``cached`` units
  reported cached.

No clock, no randomness.
"""

from __future__ import annotations

import numpy as np

from kvroute.routing.prefix_hash import PrefixHash

__all__ = ["Home"]


class Home:
    def __init__(self, forget: float) -> None:
        self.forget = forget
        self._ring = PrefixHash()
        self._sum, self._n = 1.0, 2.0  # the surprise's forgetting sums, from the prior
        self.sent = 0

    @property
    def surprise(self) -> float:
        return self._sum / self._n

    @property
    def band(self) -> float:
        return 2.0 * self._sum / self._n

    def place(self, units: np.ndarray, matched: list[int], allowed: np.ndarray,
              candidates: list[int]) -> tuple[int, int] | None:
        """The home of a prompt nothing is known to place, and the units all hold."""
        common = min(matched[w] for w in candidates)
        if max(matched[w] for w in candidates) != common:
            return None
        return self._ring.owner(units[common:], len(matched), allowed), common

    def choose(self, units: np.ndarray, matched: list[int], allowed: np.ndarray,
               candidates: list[int], cost: list[float], best: int) -> tuple[int, float]:
        """The home if it is within the band of ``best``'s cost, else ``best``; and the
        units all workers hold when it is the home, else -1."""
        placed = self.place(units, matched, allowed, candidates)
        if placed is None or cost[placed[0]] - cost[best] > self.band * abs(cost[best]):
            return best, -1.0
        self.sent += 1
        return placed[0], float(placed[1])

    def learn(self, units: int, common: float, cached: float) -> None:
        share = (cached - common) / max(units - common, 1.0)
        f = self.forget
        self._sum = f * self._sum + (0.0 if share < 0.0 else 1.0 if share > 1.0 else share)
        self._n = f * self._n + 1.0
