"""The router's prefix index: what the router believes each worker has cached.

It is learned from routing history only (a request routed to worker w is assumed cached
there), so it is blind to the workers' own evictions. Each worker's part is a radix tree
(the cache library's :class:`~kvroute.cache.RadixCache`) bounded to ``capacity`` units
with leaf-LRU trimming, like the paper's router (2^24 units per worker). Units are
whatever the router keys on: token ids, or character codes.
"""

from __future__ import annotations

import numpy as np

from kvroute.cache import RadixCache
from kvroute.errors import ConfigError

__all__ = ["DEFAULT_INDEX_CAPACITY", "PrefixIndex"]

DEFAULT_INDEX_CAPACITY = 1 << 24


class PrefixIndex:
    def __init__(self, workers: int, capacity: int = DEFAULT_INDEX_CAPACITY) -> None:
        if capacity < 1:
            raise ConfigError(f"prefix index capacity must be >= 1 unit, got {capacity}")
        self.capacity = capacity
        self._trees = [RadixCache(capacity, "lru") for _ in range(workers)]

    def __len__(self) -> int:
        return len(self._trees)

    def match(self, units: np.ndarray, now: float) -> np.ndarray:
        """Matched prefix length of ``units`` in each worker's tree."""
        return np.array([t.match(units, now).hit for t in self._trees], dtype=np.int64)

    def record(self, worker: int, units: np.ndarray, now: float) -> None:
        """``units`` were sent to ``worker``: assume it caches them from now on."""
        self._trees[worker].insert(units, now)

    def sizes(self) -> np.ndarray:
        return np.array([t.total for t in self._trees], dtype=np.int64)

    def add_worker(self) -> None:
        self._trees.append(RadixCache(self.capacity, "lru"))

    def remove_worker(self, worker: int) -> None:
        del self._trees[worker]

    def check_integrity(self) -> None:
        for tree in self._trees:
            tree.check_integrity()
