"""``cache_aware_v2``: today's SGLang router ("SMG") cache-aware policy.

The same switch as :mod:`kvroute.routing.cache_aware` (balance when imbalanced, else a
prefix hit when ``matched / len(prompt) > cache_threshold``), with two changes: newer
defaults, and a miss goes to the least-loaded worker instead of the smallest tree
(misses to the smallest tree piled onto busy workers). Least loaded = fewest requests in
flight (router-counted) among the allowed workers; ties: fewest requests routed so far
(``WorkerState.routed``), then lowest index -- branch ``"miss"``.

Parameters (published defaults): ``seed`` 0 (unused), ``cache_threshold`` 0.3,
``balance_abs_threshold`` 64, ``balance_rel_threshold`` 1.5 (validated as in
``cache_aware``).
"""

from __future__ import annotations

import numpy as np

from kvroute.routing.base import ClusterView, Decision
from kvroute.routing.cache_aware import CacheAware
from kvroute.routing.registry import register

__all__ = ["CacheAwareV2"]


@register
class CacheAwareV2(CacheAware):
    name = "cache_aware_v2"

    def __init__(self, seed: int = 0, cache_threshold: float = 0.3,
                 balance_abs_threshold: int = 64, balance_rel_threshold: float = 1.5) -> None:
        super().__init__(seed, cache_threshold, balance_abs_threshold, balance_rel_threshold)

    def _miss(self, view: ClusterView, load: np.ndarray) -> Decision:
        routed = np.array([w.routed for w in view.workers], dtype=np.int64)
        allowed = view.candidates()
        order = np.lexsort((allowed, routed[allowed], load[allowed]))  # last key is primary
        return Decision(int(allowed[order[0]]), branch="miss")
