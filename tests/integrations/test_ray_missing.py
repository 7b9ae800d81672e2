"""Without Ray, the integrations say which extra to install (runs with or without Ray)."""

from __future__ import annotations

import importlib
import sys

import pytest

from kvroute.errors import ConfigError


@pytest.mark.parametrize("module", ["ray_serve", "ray_replica", "ray_grid"])
def test_import_without_ray_names_the_extra(monkeypatch, module):
    for name in [n for n in sys.modules if n.startswith("kvroute.integrations.ray")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "ray", None)
    monkeypatch.setitem(sys.modules, "ray.serve", None)
    with pytest.raises(ConfigError, match=r"pip install 'kvroute\[ray\]'"):
        importlib.import_module(f"kvroute.integrations.{module}")
        if module == "ray_grid":  # imports fine; needs Ray when it runs
            importlib.import_module("kvroute.integrations.ray_grid").RayExecutor()
