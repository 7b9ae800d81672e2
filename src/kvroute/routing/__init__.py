"""Routing: policies behind one protocol and registry, the prefix index, the router."""

from kvroute.routing import (  # noqa: F401 - importing a policy module registers it
    aibrix_prefix,
    cache_aware,
    cache_aware_v2,
    dynamo,
    lbgr,
    least_load,
    least_request,
    llmd,
    lmetric,
    oracle,
    power_of_two,
    prefix_hash,
    random,
    round_robin,
)
from kvroute.routing.base import (
    ClusterView,
    Decision,
    Feedback,
    RouteRequest,
    RoutingPolicy,
    WorkerState,
)
from kvroute.routing.prefix_index import PrefixIndex
from kvroute.routing.registry import make_router_policy, register, routing_names
from kvroute.routing.router import Dispatch, Router

__all__ = ["ClusterView", "Decision", "Dispatch", "Feedback", "PrefixIndex", "RouteRequest",
           "Router", "RoutingPolicy", "WorkerState", "make_router_policy", "register",
           "routing_names"]
