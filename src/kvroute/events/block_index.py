"""An exact index of one worker's cached blocks, built from its KV events.

:class:`BlockIndex` applies decoded events to a map of block hash -> (parent hash, token
ids) and answers, for a prompt's token ids, how many leading tokens the engine holds. It
keeps each block's tokens, so it never needs the engine's hash function.

Contract:

* Blocks live in spaces keyed by ``(group_idx, medium)``, the keys removals name; a
  probe asks one space (default: group 0 on the GPU).
* A hash is held while it was stored more times than removed (vLLM keeps duplicate
  copies of a block and stores and removes each one). Removing a hash that is not held is
  counted (``unknown_removals``) and ignored. ``AllBlocksCleared`` empties every space.
* :meth:`match` walks the prompt block by block from the root: the next block must be
  held, chain from the previous one, carry exactly the prompt's next tokens, belong to the
  probe's adapter (``lora``: the LoRA name, else its id) and have no other hash inputs
  (extra keys besides the adapter's name: multimodal ids, cache salt). It returns the
  number of tokens covered. Block sizes may differ between blocks (SGLang's node-sized
  blocks); a walk tries each size the space holds, largest first.
* A hash stored again with a different parent or tokens (an engine whose hash ignores
  the chain) is re-linked to the newest and counted (``relinked``).
* Exact: after any sequence of events, the held hashes are the stored-minus-removed
  multiset and :meth:`match` agrees with a walk over exactly those blocks
  (``tests/events/test_block_index.py`` checks it against a naive model).

Time: a stored or removed block costs a few dict operations plus hashing its tokens; a
probe one dict lookup per block and held size.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from kvroute.events.model import (
    MEDIUM_GPU,
    AllBlocksCleared,
    BlockHash,
    BlockRemoved,
    BlockStored,
    KvEvent,
)

__all__ = ["BlockIndex", "IndexStats"]

# A block's link: (parent hash, its tokens, adapter, other hash inputs).
_Link = tuple[BlockHash | None, tuple[int, ...], Hashable, Hashable]


@dataclass
class IndexStats:
    stored: int = 0
    removed: int = 0
    cleared: int = 0
    unknown_removals: int = 0
    relinked: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class _Space:
    __slots__ = ("blocks", "links", "sizes")

    def __init__(self) -> None:
        self.blocks: dict[BlockHash, list[Any]] = {}  # hash -> [copies, link]
        self.links: dict[_Link, BlockHash] = {}
        self.sizes: dict[int, int] = {}  # block size -> held hashes of that size

    def link(self, h: BlockHash, key: _Link) -> None:
        self.links[key] = h
        n = len(key[1])
        self.sizes[n] = self.sizes.get(n, 0) + 1

    def unlink(self, h: BlockHash, key: _Link) -> None:
        if self.links.get(key) == h:
            del self.links[key]
        n = len(key[1])
        left = self.sizes[n] - 1
        if left:
            self.sizes[n] = left
        else:
            del self.sizes[n]


def _plain(extra: Hashable | None, lora_name: str | None) -> Hashable | None:
    """A block's hash inputs besides tokens and adapter (vLLM lists the LoRA name
    first in its extra keys; that one is the adapter, not an extra)."""
    if extra is None or lora_name is None or not isinstance(extra, tuple):
        return extra
    if extra and extra[0] == lora_name:
        return extra[1:] or None
    return extra


class BlockIndex:
    """The blocks one engine holds, from its events (see the module docstring)."""

    def __init__(self) -> None:
        self._spaces: dict[tuple[int, str], _Space] = {}
        self.stats = IndexStats()

    # ------------------------------------------------------------------ events
    def apply(self, event: KvEvent) -> None:
        if type(event) is BlockStored:
            self._store(event)
        elif type(event) is BlockRemoved:
            self._remove(event)
        elif type(event) is AllBlocksCleared:
            self.clear()

    def apply_all(self, events: Iterable[KvEvent]) -> None:
        for event in events:
            self.apply(event)

    def clear(self) -> None:
        self._spaces.clear()
        self.stats.cleared += 1

    def _space(self, group_idx: int, medium: str) -> _Space:
        space = self._spaces.get((group_idx, medium))
        if space is None:
            space = self._spaces[(group_idx, medium)] = _Space()
        return space

    def _store(self, e: BlockStored) -> None:
        space = self._space(e.group_idx, e.medium)
        blocks = space.blocks
        parent = e.parent_block_hash
        tokens, size = e.token_ids, e.block_size
        lora = e.lora
        extras = e.extra_keys
        start = 0
        for i, h in enumerate(e.block_hashes):
            extra = None if extras is None else _plain(extras[i], e.lora_name)
            key = (parent, tokens[start:start + size], lora, extra)
            start += size
            entry = blocks.get(h)
            if entry is None:
                blocks[h] = [1, key]
                space.link(h, key)
            else:
                entry[0] += 1
                if entry[1] != key:
                    self.stats.relinked += 1
                    space.unlink(h, entry[1])
                    entry[1] = key
                    space.link(h, key)
            parent = h
        self.stats.stored += len(e.block_hashes)

    def _remove(self, e: BlockRemoved) -> None:
        space = self._spaces.get((e.group_idx, e.medium))
        if space is None:
            self.stats.unknown_removals += len(e.block_hashes)
            return
        blocks = space.blocks
        for h in e.block_hashes:
            entry = blocks.get(h)
            if entry is None:
                self.stats.unknown_removals += 1
                continue
            entry[0] -= 1
            if entry[0] == 0:
                del blocks[h]
                space.unlink(h, entry[1])
            self.stats.removed += 1

    # ------------------------------------------------------------------ queries
    def match(self, token_ids: Sequence[int], *, lora: str | int | None = None,
              medium: str = MEDIUM_GPU, group_idx: int = 0) -> int:
        """How many leading tokens of ``token_ids`` the engine holds."""
        space = self._spaces.get((group_idx, medium))
        if space is None or not space.sizes:
            return 0
        tokens = tuple(token_ids)
        links = space.links
        sizes = sorted(space.sizes, reverse=True)
        n, pos = len(tokens), 0
        parent: BlockHash | None = None
        while True:
            for size in sizes:
                if pos + size <= n:
                    h = links.get((parent, tokens[pos:pos + size], lora, None))
                    if h is not None:
                        break
            else:
                return pos
            pos += size
            parent = h

    def copies(self, block_hash: BlockHash, *, medium: str = MEDIUM_GPU,
               group_idx: int = 0) -> int:
        """How many copies of ``block_hash`` the engine holds (0: none)."""
        space = self._spaces.get((group_idx, medium))
        entry = None if space is None else space.blocks.get(block_hash)
        return 0 if entry is None else int(entry[0])

    def hashes(self, *, medium: str = MEDIUM_GPU, group_idx: int = 0) -> set[BlockHash]:
        """The hashes held in one space."""
        space = self._spaces.get((group_idx, medium))
        return set() if space is None else set(space.blocks)

    def held_tokens(self, *, medium: str = MEDIUM_GPU, group_idx: int = 0) -> int:
        """Tokens in the distinct blocks held in one space."""
        space = self._spaces.get((group_idx, medium))
        return 0 if space is None else sum(size * n for size, n in space.sizes.items())

    def __len__(self) -> int:
        """Distinct hashes held, over every space."""
        return sum(len(space.blocks) for space in self._spaces.values())

    def __contains__(self, block_hash: object) -> bool:
        return any(block_hash in space.blocks for space in self._spaces.values())
