"""The prefix KV cache mechanism: a compressed radix tree over integer ids.

Contract (what a caller may rely on):

* Token ids are integers; sequences are normalised to 1-D ``int64`` arrays. With
  ``page_size`` p > 1 the tree stores whole pages only: ``match`` and ``insert`` use the
  longest prefix whose length is a multiple of p, and eviction removes whole pages.
  All sizes and hit lengths are counted in tokens.
* The cache is prefix-closed: if a sequence is cached, so is every (page-aligned) prefix.
* ``match(tokens)`` returns the cached prefix length and a *handle* (the node that ends
  at that prefix); ``peek(tokens)`` returns the length only and changes nothing. A
  match that ends inside an edge splits it, so the handle ends exactly at the hit. A
  handle stays valid while it is locked; an unlocked handle may be evicted by any later
  mutating call.
* ``lock(handle)`` pins the whole root path of the handle (a locked node is never
  evicted); ``unlock(handle)`` undoes one ``lock``. Locks nest.
* ``insert(tokens)`` stores the sequence and returns how many tokens were new. If the
  cache then holds more than ``capacity`` tokens, it evicts through the policy before
  returning, so between calls ``total <= capacity`` always holds (the new tokens
  themselves are candidates: the offline optimum may decline to keep them).
* ``evict(n)`` asks the policy to free up to n tokens and returns how many it freed. It
  frees fewer only when every remaining token is locked (or, for a policy that evicts
  whole leaves, more: leaf-LRU rounds up to whole nodes).
* Time is logical: pass ``now`` to ``match``/``insert`` (a simulated or real clock, or
  a request index for the offline optimum); without it the cache counts operations.
  Nothing here reads the wall clock or a global RNG.
* ``subscribe(fn)`` delivers a :class:`KVEvent` for every stored and removed span.
  Event arrays are views: copy them to keep them.

The eviction policy is an object (``RadixCache(capacity, make_policy("rlt", seed=1))``);
this module does not import the policy registry. Policies plug in through the hooks of
:class:`kvroute.cache.eviction.policy.EvictionPolicy` and call back the tree's section
"tree API for policies" below (``trim_leaf``, ``discard``, ``unlink_leaf``,
``unlink_quietly``, ``emit_removed``), documented in that module's docstring; the tree
keeps its own invariants (sizes, structure, locks) and the policy keeps its candidate
sets.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import numpy as np

from kvroute.errors import ConfigError, IntegrityError

if TYPE_CHECKING:
    from kvroute.cache.eviction.policy import EvictionPolicy

__all__ = ["KVEvent", "MatchResult", "Node", "RadixCache", "as_tokens"]

TokenArray = np.ndarray
EvictRequest = Literal["deficit", "allocation"]


def as_tokens(tokens: Sequence[int] | np.ndarray) -> TokenArray:
    """Return ``tokens`` as a 1-D int64 array (no copy when it already is one)."""
    if isinstance(tokens, np.ndarray) and tokens.dtype == np.int64 and tokens.ndim == 1:
        return tokens
    arr = np.asarray(tokens)
    if arr.ndim != 1:
        raise ConfigError(f"token sequence must be 1-D, got shape {arr.shape}")
    if arr.size and arr.dtype.kind not in "iu":
        raise ConfigError(f"token ids must be integers, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


class Node:
    """One edge of the tree: ``key`` holds the ids from depth ``start`` to ``start+len``.

    ``mark``, ``slot`` and ``aux`` belong to the eviction policy (marks, positions in its
    candidate structure, anything else); the tree only copies them on a split.
    """

    __slots__ = ("aux", "children", "key", "last_access", "lock_ref", "mark", "parent", "slot",
                 "start")

    def __init__(self, key: TokenArray, start: int, parent: Node | None, now: float) -> None:
        self.key = key
        self.start = start
        self.parent = parent
        self.children: dict[object, Node] = {}
        self.lock_ref = 0
        self.last_access = now
        self.mark = 0
        self.slot = -1
        self.aux: Any = None

    @property
    def end(self) -> int:
        """Depth (in tokens) of the node's last token."""
        return self.start + len(self.key)

    def __repr__(self) -> str:
        return f"Node(start={self.start}, len={len(self.key)}, lock={self.lock_ref})"


class MatchResult(NamedTuple):
    hit: int  # cached prefix length in tokens
    handle: Node  # node ending at the hit (the root when hit == 0)


@dataclass(frozen=True, slots=True)
class KVEvent:
    """A span of ids stored in or removed from the cache (``cleared``: everything went).

    ``prefix`` is the path from the root to the span, ``tokens`` the span itself.
    """

    kind: Literal["stored", "removed", "cleared"]
    prefix: TokenArray
    tokens: TokenArray


_EMPTY = np.zeros(0, dtype=np.int64)


class RadixCache:
    """A prefix KV cache of ``capacity`` tokens with a pluggable eviction policy.

    ``eviction`` is a policy object, one per cache: build it with
    ``kvroute.cache.make_policy(name, ...)``. ``eviction_request`` chooses what
    ``insert`` asks the policy to free when over capacity: the ``deficit``, or the whole
    ``allocation`` of new tokens as SGLang does (default: the policy's own choice).
    """

    def __init__(
        self,
        capacity: int,
        eviction: EvictionPolicy,
        *,
        page_size: int = 1,
        eviction_request: EvictRequest | None = None,
    ) -> None:
        if isinstance(eviction, str) or not callable(getattr(eviction, "attach", None)):
            raise ConfigError(f"eviction must be a policy object, got {eviction!r}; build one"
                              " with kvroute.cache.make_policy(name, ...)")
        if not isinstance(capacity, (int, np.integer)) or capacity < 0:
            raise ConfigError(
                f"capacity must be a non-negative integer of tokens, got {capacity!r}")
        if not isinstance(page_size, (int, np.integer)) or page_size < 1:
            raise ConfigError(f"page_size must be an integer >= 1, got {page_size!r}")
        if eviction_request not in (None, "deficit", "allocation"):
            raise ConfigError(
                f"eviction_request must be 'deficit' or 'allocation', got {eviction_request!r}")
        self.capacity = int(capacity)
        self.page_size = int(page_size)
        self.now: float = 0
        self.root = Node(_EMPTY, 0, None, 0)
        self.root.lock_ref = 1  # the root is never a candidate
        self.total = 0  # tokens in the tree
        self.locked = 0  # tokens in nodes with lock_ref > 0
        self._listeners: list[Callable[[KVEvent], None]] = []
        policy = eviction
        self.policy = policy
        self.eviction_request: EvictRequest = eviction_request or policy.default_request
        policy.attach(self)
        self._settle = policy.settle if policy.lazy_trim else None

    # ------------------------------------------------------------------ sizes
    @property
    def evictable(self) -> int:
        """Tokens that eviction could free now (not locked)."""
        return self.total - self.locked

    @property
    def free(self) -> int:
        return self.capacity - self.total

    def __len__(self) -> int:
        return self.total

    # ------------------------------------------------------------------ events
    def subscribe(self, listener: Callable[[KVEvent], None]) -> None:
        """Call ``listener`` with a KVEvent for every stored and removed span."""
        self._listeners.append(listener)

    @property
    def listening(self) -> bool:
        return bool(self._listeners)

    def _emit(self, kind: Literal["stored", "removed", "cleared"], prefix: TokenArray,
              tokens: TokenArray) -> None:
        event = KVEvent(kind, prefix, tokens)
        for listener in self._listeners:
            listener(event)

    def path_of(self, node: Node) -> TokenArray:
        """The ids from the root to the end of ``node`` (a new array)."""
        if self._settle is not None:
            self._settle(node)
        parts = []
        while node.parent is not None:
            parts.append(node.key)
            node = node.parent
        return np.concatenate(parts[::-1]) if parts else _EMPTY

    # ------------------------------------------------------------------ walking
    def child_key(self, tokens: TokenArray, pos: int) -> object:
        """The key under which a node's child starting at ``tokens[pos]`` is indexed:
        its first id, or its first page as bytes when ``page_size`` > 1."""
        if self.page_size == 1:
            return tokens.item(pos)  # a Python int, as int(tokens[pos]) but cheaper
        return tokens[pos:pos + self.page_size].tobytes()

    def page_aligned(self, tokens: Sequence[int] | np.ndarray) -> TokenArray:
        """``tokens`` as an int64 array cut to whole pages (what match and insert use)."""
        arr = as_tokens(tokens)
        p = self.page_size
        if p > 1 and len(arr) % p:
            arr = arr[: len(arr) // p * p]
        return arr

    def _tick(self, now: float | None) -> float:
        if now is None:
            now = self.now + 1
        elif now < self.now:
            raise ConfigError(f"the clock went backwards: now={now} after {self.now}")
        self.now = now
        return now

    def common_length(self, key: TokenArray, tokens: TokenArray, pos: int) -> int:
        """Length of the common prefix of ``key`` and ``tokens[pos:]``, page-aligned."""
        n = min(len(key), len(tokens) - pos)
        if n == len(key) and key.tobytes() == tokens[pos:pos + n].tobytes():
            return n  # the usual step of a walk: the whole key matches (a key is whole pages)
        diff = key[:n] != tokens[pos:pos + n]
        i = int(diff.argmax())
        m = i if diff[i] else n
        if self.page_size > 1:
            m -= m % self.page_size
        return m

    def _split(self, node: Node, m: int, in_match: bool) -> Node:
        """Cut ``node`` after m tokens; the new node is the prefix, ``node`` the suffix."""
        parent = node.parent
        assert parent is not None
        prefix = Node(node.key[:m], node.start, parent, node.last_access)
        prefix.lock_ref = node.lock_ref
        parent.children[self.child_key(node.key, 0)] = prefix
        node.key = node.key[m:]
        node.start += m
        node.parent = prefix
        prefix.children[self.child_key(node.key, 0)] = node
        self.policy.on_split(prefix, node, in_match)
        return prefix

    def _walk(self, tokens: TokenArray, now: float, hit: bool) -> tuple[int, Node]:
        """Follow ``tokens`` from the root, splitting where the match ends inside an edge."""
        node, pos, n = self.root, 0, len(tokens)
        settle, on_access = self._settle, self.policy.on_access
        while pos < n:
            child = node.children.get(self.child_key(tokens, pos))
            if child is None:
                break
            if settle is not None and not child.children:
                settle(child)
            m = self.common_length(child.key, tokens, pos)
            if m == 0:
                break
            ends_inside = m < len(child.key)
            if ends_inside:
                child = self._split(child, m, in_match=hit)
            child.last_access = now
            on_access(child, hit)
            node, pos = child, pos + m
            if ends_inside:
                break
        return pos, node

    # ------------------------------------------------------------------ public operations
    def match(self, tokens: Sequence[int] | np.ndarray, now: float | None = None) -> MatchResult:
        """Longest cached prefix of ``tokens`` (page-aligned), as a hit length and handle."""
        arr = self.page_aligned(tokens)
        pos, node = self._walk(arr, self._tick(now), hit=True)
        return MatchResult(pos, node)

    def peek(self, tokens: Sequence[int] | np.ndarray) -> int:
        """The cached prefix length of ``tokens``, like ``match`` but with no effect at all:
        no split, no access recorded, no clock tick (for observers such as an oracle)."""
        arr = self.page_aligned(tokens)
        node, pos, n = self.root, 0, len(arr)
        while pos < n:
            child = node.children.get(self.child_key(arr, pos))
            if child is None:
                break
            if self._settle is not None and not child.children:
                self._settle(child)  # applies a pending trim: invisible to every caller
            m = self.common_length(child.key, arr, pos)
            pos += m
            if m < len(child.key):
                break
            node = child
        return pos

    def insert(self, tokens: Sequence[int] | np.ndarray, now: float | None = None) -> int:
        """Store ``tokens`` (page-aligned part); return how many tokens were new."""
        arr = self.page_aligned(tokens)
        now = self._tick(now)
        pos, node = self._walk(arr, now, hit=False)
        self.policy.on_stored(arr, pos)
        new = len(arr) - pos
        if new == 0:
            return 0
        was_leaf = not node.children and node is not self.root
        leaf = Node(arr[pos:].copy(), pos, node, now)
        node.children[self.child_key(leaf.key, 0)] = leaf
        self.total += new
        if was_leaf:
            self.policy.on_candidacy(node)
        self.policy.on_created(leaf)
        if self._listeners:
            self._emit("stored", arr[:pos], leaf.key)
        over = self.total - self.capacity
        if over > 0:
            self.policy.evict(new if self.eviction_request == "allocation" else over)
            if self.total > self.capacity:  # only the locked part can remain
                raise IntegrityError(
                    f"cache over capacity after eviction: {self.total} > {self.capacity}")
        return new

    def lock(self, handle: Node) -> None:
        """Pin the root path of ``handle`` (from ``match``) so that it cannot be evicted."""
        self._check_handle(handle)
        if self._settle is not None:
            self._settle(handle)
        node: Node | None = handle
        while node is not None and node is not self.root:
            node.lock_ref += 1
            if node.lock_ref == 1:
                self.locked += len(node.key)
                self.policy.on_candidacy(node)
            node = node.parent

    def unlock(self, handle: Node) -> None:
        """Undo one ``lock(handle)``."""
        self._check_handle(handle)
        if handle is not self.root and handle.lock_ref < 1:
            raise ConfigError("unlock of a handle that is not locked")
        node: Node | None = handle
        while node is not None and node is not self.root:
            node.lock_ref -= 1
            if node.lock_ref == 0:
                self.locked -= len(node.key)
                self.policy.on_candidacy(node)
            node = node.parent

    def _check_handle(self, handle: Node) -> None:
        if not isinstance(handle, Node):
            raise ConfigError(f"expected a handle returned by match(), got {type(handle).__name__}")
        node = handle
        while node.parent is not None:
            node = node.parent
        if node is not self.root:
            raise ConfigError("handle is no longer in this cache (evicted, or from another cache);"
                              " lock a handle right after match()")

    def evict(self, n: int) -> int:
        """Ask the policy to free up to ``n`` tokens; return how many it freed."""
        if n <= 0 or self.total == 0:
            return 0
        return self.policy.evict(int(n))

    def clear(self) -> None:
        """Drop every cached token (only allowed when nothing is locked)."""
        if self.locked:
            raise ConfigError(f"cannot clear the cache while {self.locked} tokens are locked")
        for child in list(self.root.children.values()):
            self._drop_subtree(child)
        self.total = 0
        if self._listeners:
            self._emit("cleared", _EMPTY, _EMPTY)

    def _drop_subtree(self, node: Node) -> None:
        for child in list(node.children.values()):
            self._drop_subtree(child)
        node.children.clear()
        self.policy.on_removed(node)
        assert node.parent is not None
        del node.parent.children[self.child_key(node.key, 0)]
        node.parent = None

    # ------------------------------------------------------------------ tree API for policies
    # Called by the policy's evict; see kvroute.cache.eviction.policy for the protocol.
    def discard(self, tokens: int) -> None:
        """Account for ``tokens`` that a lazy policy already took off its unlocked
        leaves' lengths (they are trimmed from the keys when the policy settles them).
        Calls back nothing and sends no event (``emit_removed`` does, beforehand)."""
        self.total -= tokens

    def unlink_leaf(self, node: Node) -> None:
        """Detach an unlocked leaf whose tokens are already accounted as gone (by
        ``discard``); calls back ``policy.on_removed(node)``, then
        ``policy.on_candidacy(parent)`` if the parent (not the root) became a leaf.

        The node's first page must still be in ``node.key`` (it names the edge); the
        node's key is emptied and its parent cleared.
        """
        parent = node.parent
        assert parent is not None and not node.children and node.lock_ref == 0
        del parent.children[self.child_key(node.key, 0)]
        self.policy.on_removed(node)
        node.parent = None
        node.key = _EMPTY
        if parent is not self.root and not parent.children:
            self.policy.on_candidacy(parent)

    def unlink_quietly(self, nodes: list[Node]) -> None:
        """``unlink_leaf`` for each of ``nodes`` in order (a child before its parent),
        calling back nothing (no ``on_removed``, no ``on_candidacy``): for a lazy policy
        that updates its own candidate set for these nodes and their parents. Each must
        be an unlocked leaf by the time its turn comes, its tokens already discarded."""
        empty, page = _EMPTY, self.page_size
        for node in nodes:
            parent = node.parent
            assert parent is not None and not node.children and node.lock_ref == 0
            key = node.key
            del parent.children[key.item(0) if page == 1 else key[:page].tobytes()]
            node.parent = None
            node.key = empty

    def trim_leaf(self, node: Node, tokens: int) -> None:
        """Remove the last ``tokens`` ids (whole pages) of an unlocked leaf, the whole
        leaf if all: sends the ``removed`` event, updates ``total``, and if the leaf
        empties unlinks it with ``unlink_leaf`` (calling back ``on_removed`` and maybe
        ``on_candidacy(parent)``). For eager policies; a leaf that keeps some tokens
        stays in the tree, and the caller keeps its candidate set up to date for it."""
        keep = len(node.key) - tokens
        assert keep >= 0 and tokens % self.page_size == 0
        if self._listeners:
            self._emit("removed", self.path_of(node)[: node.start + keep], node.key[keep:])
        self.total -= tokens
        if keep == 0:
            self.unlink_leaf(node)
        else:
            node.key = node.key[:keep]

    def emit_removed(self, prefix: TokenArray, tokens: TokenArray) -> None:
        """Send a ``removed`` event for ``tokens`` cached after ``prefix`` (the path
        from the root). For a lazy policy, which trims without ``trim_leaf``: call it
        while the span is still in the leaf's key, and only when ``listening``."""
        self._emit("removed", prefix, tokens)

    # ------------------------------------------------------------------ inspection
    def nodes(self) -> Iterator[Node]:
        """Every node but the root, parents before children."""
        stack = list(self.root.children.values())
        while stack:
            node = stack.pop()
            if self._settle is not None and not node.children:
                self._settle(node)
            yield node
            stack.extend(node.children.values())

    def cached_sequences(self) -> list[TokenArray]:
        """The root path of every leaf: the cached prefix set is all their prefixes."""
        return [self.path_of(node) for node in self.nodes() if not node.children]

    def check_integrity(self) -> None:
        """Verify every invariant of the tree and of the policy; raise IntegrityError."""
        total = locked = 0
        p = self.page_size
        for node in self.nodes():
            parent = node.parent
            if parent is None:
                raise IntegrityError(f"{node} has no parent")
            if len(node.key) == 0 or len(node.key) % p:
                raise IntegrityError(
                    f"{node} key length {len(node.key)} not a positive multiple of {p}")
            if parent.children.get(self.child_key(node.key, 0)) is not node:
                raise IntegrityError(f"{node} is not indexed under its first page in its parent")
            if node.start != parent.start + len(parent.key) and parent is not self.root:
                raise IntegrityError(f"{node} start {node.start} != parent end {parent.end}")
            if parent is self.root and node.start != 0:
                raise IntegrityError(f"{node} under the root must start at 0")
            if node.lock_ref < 0:
                raise IntegrityError(f"{node} has a negative lock count")
            if node.children and node.lock_ref < sum(c.lock_ref for c in node.children.values()):
                raise IntegrityError(f"{node} lock count below its children's: locks must cover"
                                     " the whole root path")
            if node.last_access < max((c.last_access for c in node.children.values()),
                                      default=node.last_access):
                raise IntegrityError(f"{node} accessed before one of its children")
            total += len(node.key)
            if node.lock_ref:
                locked += len(node.key)
        if total != self.total:
            raise IntegrityError(f"total {self.total} != sum of node sizes {total}")
        if locked != self.locked:
            raise IntegrityError(f"locked {self.locked} != sum of locked node sizes {locked}")
        if self.total > self.capacity:
            raise IntegrityError(f"total {self.total} exceeds capacity {self.capacity}")
        self.policy.check()
