"""The registry of eviction policies: every module of :mod:`kvroute.cache.eviction` that
registers a policy is found on first use (:mod:`kvroute.registry`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from kvroute.registry import Registry

if TYPE_CHECKING:
    from kvroute.cache.eviction.policy import EvictionPolicy

__all__ = ["EVICTION", "make_policy", "policy_class", "policy_names", "register"]

EVICTION: Registry[EvictionPolicy] = Registry("eviction policy", "kvroute.cache.eviction")
register = EVICTION.register
policy_class = EVICTION.get


def policy_names(**capabilities: Any) -> list[str]:
    """Sorted names; ``capabilities`` filter on class attributes (``needs_future=False``)."""
    return EVICTION.names(**capabilities)


def make_policy(name: str, args: Mapping[str, Any] | None = None,
                **context: Any) -> EvictionPolicy:
    """Build ``name`` with the user's ``args`` (validated) and ``context`` (``seed``,
    ``requests`` for a policy that ``needs_future``)."""
    return EVICTION.make(name, args, **context)
