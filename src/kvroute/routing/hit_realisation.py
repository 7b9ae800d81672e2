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
* ``rate(b)``: bucket ``b``'s estimate ``(cached_b + overall * m) / (matched_b + m)``,
  where ``m`` is the mean matched units of one sample: a bucket with little evidence
  borrows the overall rate, one sample's worth; an age unknown (bucket -1) gets
  ``overall``.

An update and each of these costs a few scalar operations whatever the number of buckets
(a router asks for the buckets of the few workers that hold a request's prefix): the
buckets' sums are kept divided by the product of the decays so far (renormalised before
it underflows), so decaying them all is one multiplication.

Mechanism only: how the caller weighs a realised hit is its business. No clock: ages are
the caller's (``view.now`` minus the record time).
"""

from __future__ import annotations

import math

__all__ = ["HitRealisation"]


class HitRealisation:
    def __init__(self, forget: float, buckets: int = 16, unit_s: float = 0.125) -> None:
        self.forget = forget
        self.unit_s = unit_s
        self.num = 0.0
        self.den = 0.0
        # per bucket, the sums divided by _scale (the module doc)
        self._num = [0.0] * buckets
        self._den = [0.0] * buckets
        self._scale = 1.0
        self._den_total = 0.0  # the buckets' matched units, summed (not scaled)
        self.samples = 0.0
        self._top = -1  # no bucket above this one has evidence

    @property
    def overall(self) -> float:
        return self.num / self.den if self.den > 0 else 1.0

    def bucket(self, last: float, now: float) -> int:
        """The age bucket of a record made at ``last``, at ``now`` (-1 if not finite)."""
        return self.buckets([last], now)[0]

    def buckets(self, last: list[float], now: float) -> list[int]:
        """:meth:`bucket` of each record time in ``last`` (a router asks for every worker's
        at each decision: one call, and no max()/min(), which parse keywords per call)."""
        top, unit, log2, floor, isfinite = (len(self._num) - 1, self.unit_s, math.log2,
                                            math.floor, math.isfinite)
        out = []
        for t in last:
            if not isfinite(t):
                out.append(-1)
                continue
            age = now - t
            b = floor(log2((age if age > 0.0 else 0.0) / unit + 1.0))
            out.append(b if b < top else top)
        return out

    def rate(self, bucket: int) -> float:
        """Bucket ``bucket``'s estimate (the module doc); ``overall`` for -1."""
        r = self.overall
        if bucket < 0:
            return r
        m = self._den_total / self.samples if self.samples else 1.0
        g = self._scale
        return (self._num[bucket] * g + r * m) / (self._den[bucket] * g + m)

    def oldest(self) -> float:
        """The estimate of the oldest age bucket with evidence (``overall`` before any):
        how much of a prefix survives as long as any has been seen to, so ``1 - oldest()``
        says whether the caches evict at all, whatever share of the traffic is young."""
        top, g = self._top, self._scale
        while top >= 0 and self._den[top] * g <= 1e-9:  # its evidence is forgotten
            top -= 1
        self._top = top
        return self.rate(top)

    def update(self, bucket: int, cached: float, matched: float) -> None:
        """A completed request: ``cached`` units reported of ``matched`` believed (> 0)."""
        cached = matched if matched < cached else cached  # no min(): it parses keywords
        f = self.forget
        self.num = f * self.num + cached
        self.den = f * self.den + matched
        if bucket >= 0:
            self._scale *= f
            if self._scale < 1e-150:  # renormalise before the scaled sums overflow
                self._num = [v * self._scale for v in self._num]
                self._den = [v * self._scale for v in self._den]
                self._scale = 1.0
            self._num[bucket] += cached / self._scale
            self._den[bucket] += matched / self._scale
            self._den_total = f * self._den_total + matched
            self.samples = f * self.samples + 1.0
            if bucket > self._top:
                self._top = bucket

    def by_age(self) -> dict[str, float]:
        """Per bucket with evidence, keyed by its lower age bound ("0s", "0.125s", ...)."""
        return {f"{self.unit_s * (2.0 ** b - 1.0):g}s": num / den
                for b, (num, den) in enumerate(zip(self._num, self._den, strict=True))
                if den * self._scale > 1e-9}
