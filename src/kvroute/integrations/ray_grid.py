"""``kvroute compare --ray [ADDRESS]``: grid cells as Ray tasks (``kvroute[ray]``).

Contract:

* :class:`RayExecutor` is a :class:`concurrent.futures.Executor`: ``submit(fn, *args)``
  runs ``fn(*args)`` as a Ray task (one CPU) and returns a ``concurrent.futures.Future``,
  so :func:`kvroute.sim.grid.run_grid` drives it as it drives its process pool, with the
  same progress callback. The cells are the same pure functions of the grid, so the
  results equal the local pool's bit for bit.
* Connection: an ``address`` (``ray://...`` or ``HOST:PORT``) joins that cluster; none
  joins the Ray instance already initialised in this process, else starts a local one.
  The local ``kvroute`` package is shipped to the workers (``runtime_env.py_modules``),
  so they run the driver's code, with the driver's ``KVROUTE_PLUGINS`` (a plugin file must
  be at the same path on every node); they need numpy. ``shutdown`` disconnects only from a
  Ray this executor started or joined.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import Executor, Future
from pathlib import Path
from typing import Any

from kvroute.integrations._ray import require_ray
from kvroute.plugins import PLUGINS_ENV, plugin_specs

__all__ = ["RayExecutor"]


class RayExecutor(Executor):
    def __init__(self, address: str | None = None, num_cpus: int | None = None) -> None:
        ray = require_ray()
        self._ray = ray
        self._owned = not ray.is_initialized()
        if self._owned:
            import kvroute

            env: dict[str, Any] = {"py_modules": [str(Path(kvroute.__file__).parent)]}
            if plugin_specs():
                env["env_vars"] = {PLUGINS_ENV: os.environ[PLUGINS_ENV]}
            ray.init(address=address, num_cpus=num_cpus if address is None else None,
                     include_dashboard=False, log_to_driver=False, runtime_env=env)
        self._remote: dict[Callable[..., Any], Any] = {}

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        task = self._remote.get(fn)
        if task is None:
            task = self._remote[fn] = self._ray.remote(num_cpus=1)(fn)
        fut: Future[Any] = task.remote(*args, **kwargs).future()
        return fut

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        if self._owned and self._ray.is_initialized():
            self._ray.shutdown()
        self._owned = False
