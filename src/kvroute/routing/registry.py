"""The registry of routing policies: every module of :mod:`kvroute.routing` that registers
a policy is found on first use (:mod:`kvroute.registry`); the CLI's choices come from it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kvroute.registry import Registry
from kvroute.routing.base import RoutingPolicy

__all__ = ["ROUTING", "make_router_policy", "register", "routing_names"]

ROUTING: Registry[RoutingPolicy] = Registry("routing policy", "kvroute.routing")
register = ROUTING.register


def routing_names(**capabilities: Any) -> list[str]:
    """Sorted names; ``capabilities`` filter on class attributes (``needs_probes=False``)."""
    return ROUTING.names(**capabilities)


def make_router_policy(name: str, args: Mapping[str, Any] | None = None,
                       **context: Any) -> RoutingPolicy:
    """Build ``name`` with the user's ``args`` (validated) and ``context`` (``seed`` ...)."""
    return ROUTING.make(name, args, **context)
