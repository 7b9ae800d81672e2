"""``HitRealisation``: how much of the prefix the router's index believes a worker holds
the engine really had cached, learned from feedback, overall and by the prefix's age.

The index records what the router sent; engines evict on their own, so a believed prefix
is realised only in part, and the older it is (the longer since the worker was last
sent it: ``ClusterView.last_sent``) the more of it is gone. Each completed request whose
worker was believed to hold ``matched > 0`` units adds ``(min(cached, matched),
matched)`` to two running sums, overall and in the bucket of its prefix's age at
routing: bucket ``min(buckets - 1, floor(log2(age / unit_s + 1)))`` (0 below ``unit_s``,
then doubling widths: 16 buckets of 0.125 s reach about 68 minutes; the last one holds
everything older). The overall sums decay by ``forget`` per sample, the buckets' sums
per sample of known age.

* ``overall`` = sum of cached / sum of matched (1 before any sample).
* ``oldest()``: the estimate of the oldest bucket with evidence.
* ``by_age()``: each bucket's own rate, for telemetry.
* ``estimate(buckets)``: per bucket ``(cached_b + overall * m) / (matched_b + m)``, where
  ``m`` is the mean matched units of one sample: a bucket with little evidence borrows
  the overall rate, one sample's worth; an age unknown (bucket -1) gets ``overall``.
  The per-bucket estimates and ``oldest()`` are computed in ``update`` (they change only
  there), so a routing decision only looks them up.

Mechanism only: how the caller weighs a realised hit is its business. No clock: ages are
the caller's (``view.now`` minus the record time).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["HitRealisation"]


class HitRealisation:
    def __init__(self, forget: float, buckets: int = 16, unit_s: float = 0.125) -> None:
        self.forget = forget
        self.unit_s = unit_s
        self.num = 0.0
        self.den = 0.0
        self.age_num = np.zeros(buckets)
        self.age_den = np.zeros(buckets)
        self.samples = 0.0
        # each bucket's estimate, then overall (for bucket -1); refreshed by update()
        self._table = np.ones(buckets + 1)
        self._oldest = 1.0

    @property
    def overall(self) -> float:
        return self.num / self.den if self.den > 0 else 1.0

    def bucket(self, last: float, now: float) -> int:
        """The age bucket of a record made at ``last``, at ``now`` (-1 if not finite)."""
        if not math.isfinite(last):
            return -1
        age = max(now - last, 0.0)
        return min(math.floor(math.log2(age / self.unit_s + 1.0)), len(self.age_num) - 1)

    def estimate(self, buckets: np.ndarray) -> np.ndarray:
        out: np.ndarray = self._table[buckets]  # bucket -1 reads the last entry: overall
        return out

    def oldest(self) -> float:
        """The estimate of the oldest age bucket with evidence (``overall`` before any):
        how much of a prefix survives as long as any has been seen to, so ``1 - oldest()``
        says whether the caches evict at all, whatever share of the traffic is young."""
        return self._oldest

    def update(self, bucket: int, cached: float, matched: float) -> None:
        """A completed request: ``cached`` units reported of ``matched`` believed (> 0)."""
        cached = min(cached, matched)
        f = self.forget
        self.num = f * self.num + cached
        self.den = f * self.den + matched
        if bucket >= 0:
            self.age_num *= f
            self.age_den *= f
            self.age_num[bucket] += cached
            self.age_den[bucket] += matched
            self.samples = f * self.samples + 1.0
        # the estimates change only here: computed once, not at every routing decision
        r = self.overall
        m = float(self.age_den.sum()) / self.samples if self.samples else 1.0
        per = self._table[:-1]  # a view: estimate() returns copies, so rewriting is safe
        np.divide(self.age_num + r * m, self.age_den + m, out=per)
        self._table[-1] = r
        seen = (self.age_den > 1e-9).nonzero()[0]
        self._oldest = float(per[seen[-1]]) if len(seen) else r

    def by_age(self) -> dict[str, float]:
        """Per bucket with evidence, keyed by its lower age bound ("0s", "0.125s", ...)."""
        lower = self.unit_s * (2.0 ** np.arange(len(self.age_num)) - 1.0)
        return {f"{lower[b]:g}s": float(self.age_num[b] / self.age_den[b])
                for b in np.flatnonzero(self.age_den > 1e-9)}
