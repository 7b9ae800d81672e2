"""Two policies in one file of your own, loaded as a plugin (docs/architecture.md):

    kvroute --plugin examples/plugin_policies.py compare --workloads gsp \\
        --routings capped_affinity,cache_aware_v2,learned --evictions largest_leaf,rlt

* ``capped_affinity`` (routing): the worker whose cache holds the longest prefix of the
  prompt, unless it has ``cap`` more requests in flight than the least loaded worker;
  then the least loaded one. ``--policy-arg cap=N`` sets the cap.
* ``largest_leaf`` (eviction): whole leaves, the longest first (fewest victims per token
  freed), ties to the least recently used.

A plugin registers its classes with kvroute's own decorators and nothing else.
"""

from __future__ import annotations

from kvroute.cache.eviction.registry import register as register_eviction
from kvroute.cache.eviction.scored_leaves import ScoredLeaves
from kvroute.cache.radix import Node
from kvroute.routing.base import ClusterView, Decision, RouteRequest, RoutingPolicy
from kvroute.routing.registry import register as register_routing


@register_routing
class CappedAffinity(RoutingPolicy):
    name = "capped_affinity"
    uses_index = True  # the router keeps its prefix index for view.matched

    def __init__(self, seed: int = 0, cap: int = 4) -> None:
        super().__init__(seed)
        if cap < 0:
            raise ValueError(f"cap must be >= 0, got {cap}")
        self.cap = cap

    def route(self, req: RouteRequest, view: ClusterView) -> Decision:
        load = view.in_flight()
        least = view.argmin(load)
        best = view.argmax(view.matched(req))
        if load[best] - load[least] > self.cap:
            return Decision(least, branch="least_load")
        return Decision(best, branch="affinity")


@register_eviction
class LargestLeaf(ScoredLeaves):
    name = "largest_leaf"

    def key(self, node: Node) -> tuple[int, float]:
        return (-len(node.key), node.last_access)
