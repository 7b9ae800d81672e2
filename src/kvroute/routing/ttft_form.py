"""The form of ``learned``'s TTFT model, forwards and backwards.

A request of ``L`` prompt units of which ``h`` are cached prefills ``u = L - h`` units,
``pairs = u (h + u / 2)`` attention pairs, behind ``ahead`` uncached units queued on its
worker. Its TTFT is modelled as ``a . [(ahead + u) / 1000, pairs / 1e6, 1]``
(:func:`ttft_features`; the coefficients ``a`` are learned online).

Backwards (:func:`cached_from_ttft`): with nothing queued ahead, the ``u`` in ``[0, L]``
at which the model gives an observed TTFT: ``a0 u / 1000 + a1 u (L - u / 2) / 1e6 + a2 =
TTFT``, increasing in ``u`` on ``[0, L]`` for ``a >= 0``; returned as the cached units
``L - u``. A TTFT below the fixed cost ``a2`` reads as all cached, one above the TTFT of
no hit as nothing cached.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["cached_from_ttft", "ttft_features"]


def ttft_features(ahead: float, unc: float, hit: float) -> tuple[float, float, float]:
    """``[(ahead + u) / 1000, pairs / 1e6, 1]`` for ``u = unc`` uncached units after
    ``hit`` cached ones (a tuple: a router keeps one per open request)."""
    return ((ahead + unc) / 1000.0, unc * (hit + unc / 2.0) / 1e6, 1.0)


def cached_from_ttft(a: Sequence[float], units: int, ttft_s: float) -> float:
    """The cached units of a prompt of ``units`` that took ``ttft_s`` with nothing queued
    ahead, under coefficients ``a`` (the module doc)."""
    a0, a1, a2 = a
    n = float(units)
    tau = ttft_s - a2  # a1 / 2e6 u^2 - b u + tau = 0, the smaller root
    b = a0 / 1000.0 + a1 * n / 1e6
    if tau <= 0 or b <= 0:
        return n
    disc = b * b - 4.0 * (a1 / 2e6) * tau
    u = n if disc < 0 else min(2.0 * tau / (b + math.sqrt(disc)), n)
    return n - u
