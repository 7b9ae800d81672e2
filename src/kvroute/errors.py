"""kvroute's exception tree: every error a user can cause is a KvrouteError."""

from __future__ import annotations

__all__ = ["ConfigError", "IntegrityError", "KvrouteError", "UnknownNameError"]


class KvrouteError(Exception):
    """Base of every error kvroute raises on purpose."""


class ConfigError(KvrouteError, ValueError):
    """A parameter or input is invalid; the message says what to change."""


class UnknownNameError(ConfigError, KeyError):
    """A name (policy, workload, profile) is not in its registry."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class IntegrityError(KvrouteError, AssertionError):
    """A data structure's invariant does not hold (a bug in kvroute)."""
