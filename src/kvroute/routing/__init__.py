"""Routing: policies behind one protocol and registry, the prefix index, the router."""

from kvroute.routing import random, round_robin  # noqa: F401 - register the policies
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
