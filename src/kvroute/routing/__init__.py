"""Routing: policies behind one protocol and registry, the prefix index, the router.

Each policy is one module here that registers itself; the registry finds it on first use."""

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
