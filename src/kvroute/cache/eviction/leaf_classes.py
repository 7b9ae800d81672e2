"""The classes of leaves that ``learned`` eviction estimates reuse for, and the state it
keeps on each node (``node.aux``, a list):

``[hits, tail ghost key, proven, created length, entry group, entry key]``: the matches
that passed through the node; the key of the ghost its own trims left (or None); the
length of its head that was asked for again through a ghost; its length when created (a
split gives each part its share); and the group and key of its live heap entry.

A class is a group and an age. The group: the hit bucket (``bit_length(hits)`` capped at
6: 0, 1, 2-3, 4-7, 8-15, 16-31, 32+; a leaf that is all proven head counts one hit
more), whether it hangs below a cached prefix (``start > 0``), and whether it is down to
its shallow half (length at most half its created length). The age: phases since its
last access, 0, 1, 2-3, 4-7, 8+.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kvroute.cache.radix import Node

__all__ = ["AGES", "BUCKETS", "GROUPS", "age_bucket", "group", "new_aux"]

BUCKETS = 7
AGES = 5
GROUPS = 4 * BUCKETS


def new_aux(hits: int, created: int, proven: int = 0) -> list[Any]:
    return [hits, None, proven, created, -1, -1.0]


def group(node: Node) -> int:
    aux = node.aux
    length = len(node.key)
    hits: int = aux[0] + (length <= aux[2])
    shallow: bool = 2 * length <= aux[3]
    return (4 * (hits.bit_length() if hits < 64 else BUCKETS - 1) + 2 * (node.start > 0)
            + shallow)


_AGE_OF = (0, 1, 2, 2, 3, 3, 3, 3)  # bit_length(phases) for 0-7 phases


def age_bucket(phases: int) -> int:
    """``min(AGES - 1, bit_length(phases))``, by table (it runs for every victim)."""
    return _AGE_OF[phases] if phases < 8 else AGES - 1
