"""The router's prefix index: what the router believes each worker has cached.

One radix tree shared by all workers (SGLang's "approximate tree"): each node lists the
workers ("tenants") believed to hold it, with the time they last were sent it. It is
learned from routing history only (a request routed to worker w is assumed cached
there), so it is blind to the workers' own evictions.

Contract:

* ``match(units)`` returns, for every worker, the length of the longest prefix of
  ``units`` it holds. It changes nothing (no split, no timestamp), so probing costs one
  walk down the tree whatever the number of workers. ``match_last_sent(units)`` gives the
  match and, from the same walk, per worker, the time of its record at the deepest node
  it matched.
* ``record(w, units, now)`` marks every prefix of ``units`` as held by ``w`` at ``now``;
  ``forget(w, units, keep, now)`` undoes it beyond the ``keep`` units ``w`` held before,
  for a request that never reached ``w`` (later records of those units stay);
  ``clear(w)`` forgets all ``w`` was believed to hold (it went down: its cache is gone).
* Tenancy is prefix-closed per worker. ``sizes()`` is each worker's units in the tree.
* Every ``trim_interval`` of the clock given to ``record`` (60 s), each worker holding more
  than its capacity is trimmed leaf-LRU: its least recently recorded leaves go first,
  until it fits. The capacity is ``capacity`` units (2^24, the paper's router constant)
  until ``set_capacity(w, units)`` bounds worker ``w`` by what it can really hold (the
  live router does so from each engine's reported KV pool); a lower bound trims at once.
  With ``node_units`` > 0 every node a worker holds also costs that many units against
  its bound (not in ``sizes()``): many short prompts then cannot grow the tree past what
  the bound means in memory (a node costs about 1 KB, as much as 200 token ids' keys).
* Adapters. ``match``, ``match_last_sent``, ``record`` and ``forget`` take the LoRA
  ``adapter`` a prompt is for (None: the base model). An adapter's prompts are filed
  behind one unit of their own (``adapter_unit``, negative: never a token id or a
  character code), so they share no prefix with another adapter's or the base model's,
  as in the engines' caches; lengths in and out are the prompt's, without that unit.
* Units are whatever the router keys on: token ids or character codes (1-D integer
  arrays, compared by value; a node keeps a copy of its units in the dtype they came in,
  so character codes cost one or four bytes each, except that 64-bit units that fit in
  32 bits, as every vocabulary's token ids do, are kept in 32: half the memory, and half
  the pages a growing index touches, which is most of what recording a new prompt costs).
  Each call narrows its units so (a walk compares like with like); the last array's
  narrowed copy is kept, so a routing decision's match and record narrow it once. Units
  arrays must not change after they are passed.
"""

from __future__ import annotations

import heapq
import zlib

import numpy as np

from kvroute.errors import ConfigError, IntegrityError

__all__ = ["DEFAULT_INDEX_CAPACITY", "DEFAULT_TRIM_INTERVAL", "PrefixIndex", "adapter_unit"]

DEFAULT_INDEX_CAPACITY = 1 << 24
DEFAULT_TRIM_INTERVAL = 60.0


class _Node:
    __slots__ = ("children", "key", "parent", "tenants")

    def __init__(self, key: np.ndarray, parent: _Node | None) -> None:
        self.key = key
        self.parent = parent
        self.children: dict[int, _Node] = {}
        self.tenants: dict[int, float] = {}  # worker -> last time recorded


def _common(key: np.ndarray, units: np.ndarray, pos: int) -> int:
    n = min(len(key), len(units) - pos)
    diff = key[:n] != units[pos:pos + n]
    i = int(diff.argmax()) if n else 0
    return i if n and diff[i] else n


_INT32 = np.iinfo(np.int32)


def adapter_unit(adapter: str) -> int:
    """The unit that heads each of ``adapter``'s prompts in the index: negative, from a
    CRC-32 of the name (two adapters collide with odds of one in 2^31)."""
    return -1 - (zlib.crc32(adapter.encode()) & 0x7FFF_FFFF)


def _fits_int32(units: np.ndarray) -> bool:
    """Every value of the int64 ``units`` fits in 32 bits. Token ids are never negative:
    then one pass (the bits of them all, OR-ed: under 2^31 exactly when each is) decides,
    a third of a minimum and a maximum's time."""
    bits = int(np.bitwise_or.reduce(units))
    if bits >= 0:
        return bits <= _INT32.max
    return bool(_INT32.min <= np.minimum.reduce(units) and np.maximum.reduce(units) <= _INT32.max)


class PrefixIndex:
    def __init__(self, workers: int, capacity: int = DEFAULT_INDEX_CAPACITY,
                 trim_interval: float = DEFAULT_TRIM_INTERVAL) -> None:
        if capacity < 1:
            raise ConfigError(f"prefix index capacity must be >= 1 unit, got {capacity}")
        if trim_interval <= 0:
            raise ConfigError(f"trim interval must be > 0 s, got {trim_interval}")
        self.capacity = capacity
        self.trim_interval = trim_interval
        self.root = _Node(np.empty(0, dtype=np.int64), None)
        self._sizes = [0] * workers
        self._nodes = [0] * workers  # nodes each worker is a tenant of
        self._caps = [capacity] * workers
        self.node_units = 0  # what one node costs against a worker's bound, in units
        self._next_trim = trim_interval
        self._last: tuple[np.ndarray, np.ndarray] | None = None  # units, their keys
        self._buffer = np.empty(0, dtype=np.int32)
        # the last walk's units, deepest node they matched whole and its end depth, while
        # the tree is unchanged: record() of the same units (a routing decision's match,
        # then its record) starts there instead of comparing the path's units again
        self._walked: tuple[np.ndarray, _Node, int] | None = None
        # the last (units, adapter) and the units headed by the adapter's unit: a decision's
        # match and record build them once, and record's start from match's walk holds
        self._adapted: tuple[np.ndarray, str, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self._sizes)

    def _filed(self, units: np.ndarray, adapter: str | None) -> np.ndarray:
        """``units`` as filed for ``adapter`` (the module doc)."""
        if adapter is None:
            return units
        last = self._adapted
        if last is None or last[0] is not units or last[1] != adapter:
            keys = np.empty(len(units) + 1, dtype=np.int64)
            keys[0] = adapter_unit(adapter)
            keys[1:] = units
            last = self._adapted = (units, adapter, keys)
        return last[2]

    def match(self, units: np.ndarray, now: float = 0.0,
              adapter: str | None = None) -> np.ndarray:
        """Longest prefix of ``units`` each worker holds (``now`` is unused: no side effect)."""
        return self.match_last_sent(units, now, adapter)[0] if adapter is not None \
            else self._walk(units, None)

    def match_last_sent(self, units: np.ndarray, now: float = 0.0,
                        adapter: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``match(units)`` and, per worker, when it was last recorded at the deepest node
        of ``units`` it holds (the freshest sign of its copy of its longest prefix; -inf
        where it holds none), in one walk."""
        times = np.full(len(self._sizes), -np.inf)
        out = self._walk(self._filed(units, adapter), times)
        if adapter is not None:  # the adapter's unit is not the prompt's
            np.maximum(out - 1, 0, out=out)
            times[out == 0] = -np.inf
        return out, times

    def _keys(self, units: np.ndarray) -> np.ndarray:
        """``units`` narrowed (the module doc), once for the last array passed, into a
        buffer this index reuses (nodes keep copies, never views of it)."""
        if self._last is None or self._last[0] is not units:
            keys = units
            if units.dtype == np.int64 and len(units) and _fits_int32(units):
                if len(self._buffer) < len(units):
                    self._buffer = np.empty(2 * len(units), dtype=np.int32)
                keys = self._buffer[:len(units)]
                np.copyto(keys, units, casting="unsafe")
            self._last = (units, keys)
        return self._last[1]

    def _walk(self, units: np.ndarray, times: np.ndarray | None) -> np.ndarray:
        given, units = units, self._keys(units)
        out = np.zeros(len(self._sizes), dtype=np.int64)
        node, pos, n = self.root, 0, len(units)
        while pos < n:
            child = node.children.get(int(units[pos]))
            if child is None:
                break
            m = _common(child.key, units, pos)
            for w in child.tenants:
                out[w] = pos + m
            if times is not None:
                for w, t in child.tenants.items():
                    times[w] = t
            if m < len(child.key):
                break
            node, pos = child, pos + m
        self._walked = (given, node, pos)
        return out

    def record(self, worker: int, units: np.ndarray, now: float,
               adapter: str | None = None) -> None:
        """``units`` were sent to ``worker`` at ``now``: it holds every prefix of them."""
        if not 0 <= worker < len(self._sizes):
            raise ConfigError(f"no worker {worker} in the index ({len(self._sizes)} workers)")
        units = self._filed(units, adapter)
        walked, self._walked = self._walked, None
        given, units = units, self._keys(units)
        node, pos, n = self.root, 0, len(units)
        added = 0
        if walked is not None and walked[0] is given:  # the path to walked's node is known
            node, pos = walked[1], walked[2]
            above = node
            while above is not self.root:
                added += self._hold(above, worker, now)
                above = above.parent  # type: ignore[assignment]
        while pos < n:
            child = node.children.get(int(units[pos]))
            if child is None:
                leaf = _Node(units[pos:].copy(), node)
                node.children[int(units[pos])] = leaf
                added += self._hold(leaf, worker, now)
                break
            m = _common(child.key, units, pos)
            if m < len(child.key):
                child = self._split(child, m)
            added += self._hold(child, worker, now)
            node, pos = child, pos + m
        self._sizes[worker] += added
        if now >= self._next_trim:
            self._next_trim = (now // self.trim_interval + 1) * self.trim_interval
            self.trim()

    def _hold(self, node: _Node, worker: int, now: float) -> int:
        """``worker`` holds ``node`` as of ``now``: the units it did not hold before."""
        new = worker not in node.tenants
        node.tenants[worker] = now
        if new:
            self._nodes[worker] += 1
            return len(node.key)
        return 0

    def forget(self, worker: int, units: np.ndarray, keep: int, now: float,
               adapter: str | None = None) -> None:
        """Undo ``record(worker, units, now, adapter)`` past the first ``keep`` units:
        drop the worker from the path's nodes beyond depth ``keep``, deepest first, while a
        node still carries this record's time and holds none of the worker's longer
        prefixes."""
        self._walked = None
        if adapter is not None:
            units, keep = self._filed(units, adapter), keep + 1 if keep else 0
        units = self._keys(units)
        path: list[tuple[_Node, int]] = []  # (node, depth at its start)
        node, pos, n = self.root, 0, len(units)
        while pos < n:
            child = node.children.get(int(units[pos]))
            if child is None:
                break
            m = _common(child.key, units, pos)
            if m < len(child.key):
                break
            path.append((child, pos))
            node, pos = child, pos + m
        for node, start in reversed(path):
            if start < keep or node.tenants.get(worker) != now \
                    or not self._is_leaf_of(node, worker):
                break
            del node.tenants[worker]
            self._sizes[worker] -= len(node.key)
            self._nodes[worker] -= 1
            if not node.tenants and not node.children:
                assert node.parent is not None
                del node.parent.children[int(node.key[0])]

    def clear(self, worker: int) -> None:
        """Forget everything ``worker`` is believed to hold."""
        self._walked = None
        stack = [self.root]
        while stack:
            node = stack.pop()
            stack.extend(node.children.values())
            node.tenants.pop(worker, None)
        self._sizes[worker] = 0
        self._nodes[worker] = 0
        self._prune(self.root)

    def _split(self, node: _Node, m: int) -> _Node:
        parent = node.parent
        assert parent is not None
        # both halves get their own copies: no view keeps the whole old array alive once
        # either half is trimmed
        prefix = _Node(node.key[:m].copy(), parent)
        prefix.tenants = dict(node.tenants)
        for w in prefix.tenants:
            self._nodes[w] += 1
        parent.children[int(node.key[0])] = prefix
        node.key = node.key[m:].copy()
        node.parent = prefix
        prefix.children[int(node.key[0])] = node
        return prefix

    def set_capacity(self, worker: int, units: int) -> None:
        """Bound ``worker`` to ``units`` (>= 1); trims it now if it holds more."""
        self._walked = None
        if units < 1:
            raise ConfigError(f"prefix index capacity must be >= 1 unit, got {units}")
        self._caps[worker] = units
        cost = self._costs()[worker]
        if cost > units:
            self._trim_worker(worker, cost - units)

    def capacities(self) -> np.ndarray:
        return np.array(self._caps, dtype=np.int64)

    def trim(self) -> None:
        """Trim every worker above its capacity, least recently recorded leaves first."""
        self._walked = None
        for w, cost in enumerate(self._costs()):
            if cost > self._caps[w]:
                self._trim_worker(w, cost - self._caps[w])

    def _costs(self) -> list[int]:
        """Each worker's units plus ``node_units`` per node it holds."""
        k = self.node_units
        return [size + k * nodes for size, nodes in zip(self._sizes, self._nodes, strict=True)]

    def _is_leaf_of(self, node: _Node, w: int) -> bool:
        return w in node.tenants and not any(w in c.tenants for c in node.children.values())

    def _trim_worker(self, w: int, excess: int) -> None:
        heap: list[tuple[float, int, _Node]] = []
        stack = [self.root]
        while stack:
            node = stack.pop()
            stack.extend(c for c in node.children.values() if w in c.tenants)
            if node is not self.root and self._is_leaf_of(node, w):
                heap.append((node.tenants[w], id(node), node))
        heapq.heapify(heap)
        while excess > 0 and heap:
            _, _, node = heapq.heappop(heap)
            del node.tenants[w]
            self._sizes[w] -= len(node.key)
            self._nodes[w] -= 1
            excess -= len(node.key) + self.node_units
            parent = node.parent
            assert parent is not None
            if not node.tenants and not node.children:
                del parent.children[int(node.key[0])]
            if parent is not self.root and self._is_leaf_of(parent, w):
                heapq.heappush(heap, (parent.tenants[w], id(parent), parent))

    def sizes(self) -> np.ndarray:
        return np.array(self._sizes, dtype=np.int64)

    def add_worker(self) -> None:
        self._walked = None
        self._sizes.append(0)
        self._nodes.append(0)
        self._caps.append(self.capacity)

    def remove_worker(self, worker: int) -> None:
        """Forget ``worker``; later workers shift down one index (as the router's list does)."""
        self._walked = None
        stack = [self.root]
        while stack:
            node = stack.pop()
            stack.extend(node.children.values())
            if node.tenants:
                node.tenants = {(v - 1 if v > worker else v): t
                                for v, t in node.tenants.items() if v != worker}
        del self._sizes[worker]
        del self._nodes[worker]
        del self._caps[worker]
        self._prune(self.root)

    def _prune(self, node: _Node) -> None:
        for key, child in list(node.children.items()):
            self._prune(child)
            if not child.tenants and not child.children:
                del node.children[key]

    def check_integrity(self) -> None:
        """Tenancy is prefix-closed, no node is empty, and sizes and node counts add up."""
        sizes = [0] * len(self._sizes)
        nodes = [0] * len(self._sizes)
        stack = [self.root]
        while stack:
            node = stack.pop()
            for key, child in node.children.items():
                if child.parent is not node or int(child.key[0]) != key or not len(child.key):
                    raise IntegrityError("prefix index: broken parent/child link")
                if not child.tenants and not child.children:
                    raise IntegrityError("prefix index: a node without tenants or children")
                if node is not self.root and not set(child.tenants) <= set(node.tenants):
                    raise IntegrityError("prefix index: tenancy is not prefix-closed")
                for w in child.tenants:
                    sizes[w] += len(child.key)
                    nodes[w] += 1
                stack.append(child)
        if sizes != self._sizes:
            raise IntegrityError(f"prefix index: sizes {self._sizes} != counted {sizes}")
        if nodes != self._nodes:
            raise IntegrityError(f"prefix index: node counts {self._nodes} != counted {nodes}")
