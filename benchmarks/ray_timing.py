"""A timing mixin for Ray Serve request routers (used by ``ray_serve_bench.py``). It lives
in its own module because Serve pickles the configured router class's module by value:
``LIVE`` must be this module's, imported by reference, to be read back by the driver."""

from __future__ import annotations

import time
from typing import Any

LIVE: list[Any] = []  # every timed router built in this process


class TimedMixin:
    """Times each ``choose_replicas`` call (perf_counter, seconds) into ``decisions_s``."""

    def initialize_state(self, **kwargs: Any) -> None:
        self.decisions_s: list[float] = []
        LIVE.append(self)
        super().initialize_state(**kwargs)  # type: ignore[misc]

    async def choose_replicas(self, candidate_replicas: Any, pending_request: Any = None) -> Any:
        t0 = time.perf_counter()
        out = await super().choose_replicas(  # type: ignore[misc]
            candidate_replicas, pending_request)
        self.decisions_s.append(time.perf_counter() - t0)
        return out
