"""Importing kvroute.events without its extra names the extra to install."""

import importlib
import sys

import pytest

from kvroute.errors import ConfigError


@pytest.mark.parametrize("missing", ["zmq", "msgspec"])
def test_missing_dependency_is_a_config_error(monkeypatch, missing):
    """Without pyzmq or msgspec the import raises ConfigError naming kvroute[events]."""
    for name in [m for m in sys.modules if m == "kvroute.events" or
                 m.startswith("kvroute.events.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, missing, None)  # makes `import missing` fail
    with pytest.raises(ConfigError, match=r"pip install 'kvroute\[events\]'"):
        importlib.import_module("kvroute.events")
