"""A :class:`~kvroute.events.block_index.BlockIndex` as the router's exact view of one
worker (it satisfies :class:`kvroute.routing.cache_beliefs.ExactCache`).

``BlockIndexSource(index, in_sync)``: ``match(units, adapter)`` is ``index.match`` on the
units as token ids, for the blocks of that LoRA adapter (by the name the events carry:
vLLM's ``lora_name``; an engine that sends only an adapter's id matches none);
``held()`` the tokens of the blocks held (GPU, group 0); ``in_sync`` asks the callable
given (the subscriber's ``in_sync``; always true when the events are delivered in
process, as in the simulator).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from kvroute.events.block_index import BlockIndex

__all__ = ["BlockIndexSource"]


def _always() -> bool:
    return True


class BlockIndexSource:
    def __init__(self, index: BlockIndex, in_sync: Callable[[], bool] = _always) -> None:
        self.index = index
        self._in_sync = in_sync

    @property
    def in_sync(self) -> bool:
        return self._in_sync()

    def match(self, units: np.ndarray, adapter: str | None = None) -> int:
        return self.index.match(units.tolist(), lora=adapter)

    def held(self) -> int:
        return self.index.held_tokens()
