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
* Block hashes are deterministic: the first 8 bytes (big-endian, unsigned) of BLAKE2b
  keyed by ``seed`` over the parent's hash and the block's token ids, so the same
  prefix gets the same hash on every worker with the same seed. A path's hashes are
  recomputed from its root for each event (its length / B hashes).
"""

from __future__ import annotations

from hashlib import blake2b

import numpy as np

from kvroute.cache.radix import KVEvent
from kvroute.errors import ConfigError
from kvroute.events.model import AllBlocksCleared, BlockRemoved, BlockStored, KvEvent

__all__ = ["RadixBlocks"]


class RadixBlocks:
    """Converts a RadixCache's span events into block events (see the module doc)."""

    def __init__(self, block_size: int = 16, seed: int = 0) -> None:
        if block_size < 1:
            raise ConfigError(f"block size must be >= 1 token, got {block_size}")
        self.block_size = block_size
        self._key = seed.to_bytes(8, "big", signed=True)

    def block_hash(self, parent: int | None, tokens: np.ndarray) -> int:
        h = blake2b(digest_size=8, key=self._key)
        h.update(b"\x00" * 8 if parent is None else parent.to_bytes(8, "big"))
        h.update(np.ascontiguousarray(tokens, dtype=np.int64).tobytes())
        return int.from_bytes(h.digest(), "big")

    def chain(self, path: np.ndarray, blocks: int) -> list[int]:
        """The hashes of the first ``blocks`` blocks of ``path``."""
        out: list[int] = []
        parent: int | None = None
        size = self.block_size
        for k in range(blocks):
            parent = self.block_hash(parent, path[k * size:(k + 1) * size])
            out.append(parent)
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
