"""A script of ``benchmarks/`` loaded as a module, for tests of its pure parts; the test
is skipped where the checkout has no such script."""

import importlib.util
import os
import sys
from types import ModuleType

import pytest

BENCHMARKS = os.path.join(os.path.dirname(__file__), "..", "benchmarks")


def load(name: str) -> ModuleType:
    path = os.path.join(BENCHMARKS, f"{name}.py")
    if not os.path.exists(path):
        pytest.skip(f"benchmarks/{name}.py not in this checkout")
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, BENCHMARKS)  # as when it is run: it may import the scripts beside it
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(BENCHMARKS)
    return module
