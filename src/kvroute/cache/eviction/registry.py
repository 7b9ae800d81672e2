"""The one registry of eviction policies: names come from here and nowhere else."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from kvroute.errors import ConfigError, UnknownNameError

if TYPE_CHECKING:
    from kvroute.cache.eviction.policy import EvictionPolicy

__all__ = ["make_policy", "policy_names", "register"]

_POLICIES: dict[str, type[EvictionPolicy]] = {}
P = TypeVar("P", bound="type[EvictionPolicy]")


def register(cls: P) -> P:
    """Class decorator: make the policy available under ``cls.name``."""
    if not cls.name or cls.name in _POLICIES:
        raise ValueError(f"eviction policy name {cls.name!r} is empty or taken")
    _POLICIES[cls.name] = cls
    return cls


def policy_names() -> list[str]:
    return list(_POLICIES)


def policy_class(name: str) -> type[EvictionPolicy]:
    try:
        return _POLICIES[name]
    except KeyError:
        raise UnknownNameError(
            f"unknown eviction policy {name!r}; choose one of: {', '.join(_POLICIES)}") from None


def make_policy(name: str, **kwargs: Any) -> EvictionPolicy:
    """Build the policy registered as ``name`` with its keyword parameters."""
    cls = policy_class(name)
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"bad parameters for eviction policy {name!r}: {exc}") from None
