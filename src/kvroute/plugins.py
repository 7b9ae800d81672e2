"""Policies from outside the package: a researcher's one file, or an installed package.

Contract:

* A *plugin* is a Python module that registers policies as kvroute's own modules do
  (``@register`` from ``kvroute.routing.registry`` or ``kvroute.cache.eviction.registry``);
  importing it is all that loading it means.
* Where plugins come from, in this order: the ``KVROUTE_PLUGINS`` environment variable
  (entries separated by ``os.pathsep``, as in ``PYTHONPATH``; an entry ending in ``.py``
  is a file, any other a module name to import), which ``kvroute --plugin SPEC`` extends;
  then the installed distributions' entry points in the group ``kvroute.plugins``
  (``[project.entry-points."kvroute.plugins"] mine = "my_package.policies"``).
* :func:`load_plugins` imports each once per process and is called by every registry's
  first lookup, so a plugin's policies are offered wherever kvroute's own are. The
  environment variable reaches the processes kvroute starts (``compare --jobs``, Ray
  workers on this machine); a file plugin on a remote Ray cluster must be importable
  there as a module.
* A plugin that is missing or fails to import is a :class:`~kvroute.errors.ConfigError`
  naming it and the error.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import sys
from importlib.metadata import entry_points
from pathlib import Path

from kvroute.errors import ConfigError

__all__ = ["ENTRY_POINT_GROUP", "PLUGINS_ENV", "add_plugin", "load_plugins", "plugin_specs"]

PLUGINS_ENV = "KVROUTE_PLUGINS"
ENTRY_POINT_GROUP = "kvroute.plugins"

_loaded: set[str] = set()


def plugin_specs() -> list[str]:
    """The plugins named in the environment, in order."""
    return [s for s in os.environ.get(PLUGINS_ENV, "").split(os.pathsep) if s.strip()]


def add_plugin(spec: str) -> None:
    """Name one more plugin in the environment (a file by its absolute path), so that this
    process and those it starts load it."""
    spec = spec.strip()
    if spec.endswith(".py"):
        spec = str(Path(spec).expanduser().resolve())
    specs = plugin_specs()
    if spec not in specs:
        os.environ[PLUGINS_ENV] = os.pathsep.join([*specs, spec])


def load_plugins() -> None:
    """Import every plugin not imported yet (the environment's, then the entry points')."""
    for spec in plugin_specs():
        if spec not in _loaded:
            _loaded.add(spec)
            _import(spec)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        key = f"entry point {ep.name} = {ep.value}"
        if key not in _loaded:
            _loaded.add(key)
            try:
                ep.load()
            except Exception as exc:  # a plugin's own error, reported as the user's input
                raise ConfigError(f"plugin {key} (group {ENTRY_POINT_GROUP}) failed to "
                                  f"load: {type(exc).__name__}: {exc}") from exc


def _import(spec: str) -> None:
    if not spec.endswith(".py"):
        try:
            importlib.import_module(spec)
        except Exception as exc:
            raise ConfigError(f"plugin {spec!r} ({PLUGINS_ENV}) failed to import: "
                              f"{type(exc).__name__}: {exc}") from exc
        return
    path = Path(spec)
    if not path.is_file():
        raise ConfigError(f"plugin {spec}: no such file ({PLUGINS_ENV} or --plugin)")
    name = "kvroute_plugin_" + re.sub(r"\W", "_", path.stem)
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise ConfigError(f"plugin {spec}: not a Python module")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module  # before it runs: dataclasses and pickling look it up
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise ConfigError(f"plugin {spec} failed to import: {type(exc).__name__}: "
                          f"{exc}") from exc
