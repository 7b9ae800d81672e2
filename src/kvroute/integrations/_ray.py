"""The one place that imports Ray: a ConfigError naming the extra when it is missing."""

from __future__ import annotations

from typing import Any

from kvroute.errors import ConfigError

__all__ = ["INSTALL", "require_ray"]

INSTALL = "pip install 'kvroute[ray]'"


def require_ray() -> Any:
    """The ``ray`` module with Serve importable, else a ConfigError saying what to install."""
    try:
        import ray
        import ray.serve
    except ImportError:
        raise ConfigError(f"Ray Serve is not installed; {INSTALL}") from None
    return ray
