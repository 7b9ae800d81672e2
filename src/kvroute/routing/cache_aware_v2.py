"""``cache_aware_v2``: the SGLang gateway's ("SMG") cache-aware policy in its 2026 source, and
``cache_aware_v2_cli``, the same rule at the gateway's command-line defaults.

The same switch as :mod:`kvroute.routing.cache_aware` (balance when ``max L - min L >
balance_abs_threshold`` and ``max L > balance_rel_threshold * min L``, else a prefix hit
when ``matched / len(prompt) > cache_threshold``), with one change of rule: a miss goes to
the least-loaded worker instead of the smallest tree (misses to the smallest tree piled
onto busy workers). Least loaded = fewest requests in flight (router-counted) among the
allowed workers; ties: fewest requests routed so far (``WorkerState.routed``), then lowest
index -- branch ``"miss"``.

Versions and defaults:

* ``cache_aware_v2`` follows the 2026 source (anchors.md, "Additions (2026-12)"): the
  policy's own configuration defaults, ``cache_threshold`` 0.5, ``balance_abs_threshold``
  32, ``balance_rel_threshold`` 1.1 (the anchors give 32 / 1.1; 0.5 is the same
  configuration's threshold). Its optional KV-usage imbalance triggers are off by default
  and not modelled. With ``highest_overlap=True`` (the gateway's rule when it has KV
  events) a balanced cluster sends every request to the worker with the longest match,
  whatever the ratio (ties: fewest in flight, then the smallest tree, then the lowest
  index) -- branch ``"overlap"``.
* ``cache_aware_v2_cli`` keeps the defaults of the gateway's command line (0.3 / 64 / 1.5,
  anchors.md "Routing rules"), which this project's ``cache_aware_v2`` used before: the
  rule is the same, only the thresholds differ.

Parameters: ``seed`` 0 (unused), the three thresholds (validated as in ``cache_aware``),
``highest_overlap`` False.
"""

from __future__ import annotations

import numpy as np

from kvroute.params import flag
from kvroute.routing.base import ClusterView, Decision, RouteRequest
from kvroute.routing.cache_aware import CacheAware
from kvroute.routing.registry import register

__all__ = ["CacheAwareV2", "CacheAwareV2Cli"]


@register
class CacheAwareV2(CacheAware):
    name = "cache_aware_v2"

    def __init__(self, seed: int = 0, cache_threshold: float = 0.5,
                 balance_abs_threshold: int = 32, balance_rel_threshold: float = 1.1,
                 highest_overlap: bool = False) -> None:
        super().__init__(seed, cache_threshold, balance_abs_threshold, balance_rel_threshold)
        self.highest_overlap = flag(self.name, "highest_overlap", highest_overlap)

    def route(self, req: RouteRequest, view: ClusterView) -> Decision:
        if not self.highest_overlap:
            return super().route(req, view)
        load = view.in_flight()
        allowed = view.candidates()
        hi, lo = int(load[allowed].max()), int(load[allowed].min())
        if hi - lo > self.balance_abs_threshold and hi > self.balance_rel_threshold * lo:
            return Decision(view.argmin(load), branch="balance")
        matched = view.matched(req)
        sizes = view.index_sizes()
        order = np.lexsort((allowed, sizes[allowed], load[allowed], -matched[allowed]))
        return Decision(int(allowed[order[0]]), branch="overlap")

    def _miss(self, view: ClusterView, load: np.ndarray) -> Decision:
        routed = np.array([w.routed for w in view.workers], dtype=np.int64)
        allowed = view.candidates()
        order = np.lexsort((allowed, routed[allowed], load[allowed]))  # last key is primary
        return Decision(int(allowed[order[0]]), branch="miss")


@register
class CacheAwareV2Cli(CacheAwareV2):
    name = "cache_aware_v2_cli"

    def __init__(self, seed: int = 0, cache_threshold: float = 0.3,
                 balance_abs_threshold: int = 64, balance_rel_threshold: float = 1.5,
                 highest_overlap: bool = False) -> None:
        super().__init__(seed, cache_threshold, balance_abs_threshold, balance_rel_threshold,
                         highest_overlap)
