"""A radix cache's changes as an engine's block events: what kvroute's own workers publish.

:class:`RadixBlocks` turns the span events of :class:`kvroute.cache.radix.RadixCache`
(``subscribe``: a span of ids stored after or removed from a root path) into vLLM-style
events over fixed blocks of ``block_size`` tokens, as a paged engine would send them.

Contract:

* Block ``k`` of a cached path holds its tokens ``[k * B, (k + 1) * B)``; it is held
  exactly while the path's first ``(k + 1) * B`` tokens are cached (the tree is
  prefix-closed). A stored span ``[s, e)`` of a path therefore stores the blocks that end
  inside it, ``s < (k + 1) * B <= e`` (the first may begin in the span's prefix), in one
  :class:`BlockStored` chained from block ``k - 1``; a removed span removes the same
  blocks in one :class:`BlockRemoved`. A partial last block is never published; the
  cache's ``cleared`` becomes :class:`AllBlocksCleared`. So the held blocks are always
  exactly the full blocks of the cached paths, and a :class:`BlockIndex` fed these
  events matches every prompt to its cached length rounded down to whole blocks.
* Block hashes are deterministic and seeded: block ``k``'s hash is a function of the
  seed and the path's first ``(k + 1) * B`` tokens, i.e. of its parent block's hash
  inputs and its own tokens, as a chained hash is. It is a polynomial hash of that prefix
  modulo 2^64 (base drawn from ``seed``), finished with SplitMix64: one vectorised pass
  over the path per event, so the emulated worker and the simulator can afford to
  recompute a path's hashes from its root. Not collision-proof against adversarial
  prompts; kvroute never needs it to be (an index is fed only its own worker's hashes).
"""

from __future__ import annotations

from hashlib import blake2b

import numpy as np

from kvroute.cache.radix import KVEvent
from kvroute.errors import ConfigError
from kvroute.events.model import AllBlocksCleared, BlockRemoved, BlockStored, KvEvent

__all__ = ["RadixBlocks"]


_K1 = np.uint64(0x9E3779B97F4A7C15)
_K2 = np.uint64(0xD1B54A32D192ED03)
_K3 = np.uint64(0x94D049BB133111EB)


def _splitmix(x: np.ndarray) -> np.ndarray:
    x = x + _K1
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * _K3
    out: np.ndarray = x ^ (x >> np.uint64(31))
    return out


class RadixBlocks:
    """Converts a RadixCache's span events into block events (see the module doc)."""

    def __init__(self, block_size: int = 16, seed: int = 0) -> None:
        if block_size < 1:
            raise ConfigError(f"block size must be >= 1 token, got {block_size}")
        self.block_size = block_size
        digest = blake2b(seed.to_bytes(8, "big", signed=True), digest_size=8).digest()
        self._base = np.uint64(int.from_bytes(digest, "big") | 1)  # odd
        self._powers = np.ones(1, dtype=np.uint64)

    def _powers_upto(self, n: int) -> np.ndarray:
        have = len(self._powers)
        if have < n:
            grow = max(n, 2 * have)
            steps = np.full(grow - have, self._base, dtype=np.uint64)
            more = self._powers[-1] * np.cumprod(steps, dtype=np.uint64)
            self._powers = np.concatenate([self._powers, more])
        return self._powers[:n]

    def chain(self, path: np.ndarray, blocks: int) -> list[int]:
        """The hashes of the first ``blocks`` blocks of ``path``."""
        if blocks <= 0:
            return []
        n = blocks * self.block_size
        x = np.asarray(path[:n]).astype(np.uint64) * _K1 + _K2
        prefix = np.cumsum(x * self._powers_upto(n), dtype=np.uint64)
        ends = np.arange(self.block_size, n + 1, self.block_size, dtype=np.uint64)
        out: list[int] = _splitmix(prefix[self.block_size - 1::self.block_size]
                                   ^ (ends * _K3)).tolist()
        return out

    def convert(self, event: KVEvent) -> KvEvent | None:
        """The block event for one span event (``None``: no whole block changed)."""
        if event.kind == "cleared":
            return AllBlocksCleared()
        size = self.block_size
        start = len(event.prefix)
        end = start + len(event.tokens)
        first, last = start // size, end // size  # blocks first .. last - 1
        if first >= last:
            return None
        path = np.concatenate([event.prefix, event.tokens])
        hashes = self.chain(path, last)
        if event.kind == "removed":
            return BlockRemoved(tuple(hashes[first:]))
        return BlockStored(tuple(hashes[first:]), hashes[first - 1] if first else None,
                           tuple(path[first * size:last * size].tolist()), size)
