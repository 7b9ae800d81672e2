"""One registry of routing policies: the CLI's choices and the router's names come from it."""

from __future__ import annotations

from typing import Any, TypeVar

from kvroute.errors import UnknownNameError
from kvroute.routing.base import RoutingPolicy

__all__ = ["make_router_policy", "register", "routing_names"]

_REGISTRY: dict[str, type[RoutingPolicy]] = {}
P = TypeVar("P", bound=type[RoutingPolicy])


def register(cls: P) -> P:
    if not cls.name or cls.name in _REGISTRY:
        raise ValueError(f"routing policy name {cls.name!r} is empty or taken")
    _REGISTRY[cls.name] = cls
    return cls


def routing_names() -> list[str]:
    return sorted(_REGISTRY)


def routing_class(name: str) -> type[RoutingPolicy]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownNameError(f"unknown routing policy {name!r}; choose from: "
                               f"{', '.join(routing_names())}") from None


def make_router_policy(name: str, **kwargs: Any) -> RoutingPolicy:
    return routing_class(name)(**kwargs)
