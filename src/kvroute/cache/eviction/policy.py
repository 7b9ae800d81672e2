"""The eviction-policy protocol: the hooks the radix tree calls, the tree API a policy
may call back, and what each side promises.

A policy object serves exactly one :class:`~kvroute.cache.radix.RadixCache` (build it
with ``make_policy(name, ...)`` and pass it to the cache). The tree owns the structure,
the sizes and the locks; a policy owns its candidate set and decides victims.

Hooks: the tree calls, in this order of life,

* ``attach(cache)`` once, from the cache's constructor;
* ``on_stored(tokens, cached)`` once per ``insert``, after its walk: the page-aligned
  tokens stored and how many leading ones the tree already held;
* ``on_created(leaf)`` for a new (unlocked) leaf made by ``insert``;
* ``on_access(node, hit)`` for every node a ``match`` (``hit=True``) or an ``insert``
  (``hit=False``) walks through, after ``node.last_access`` is set to the cache's now;
* ``on_split(prefix, suffix, in_match)`` after an edge is cut (``suffix`` is the old
  node object; its leaf status and lock count are unchanged);
* ``on_candidacy(node)`` when the node's leaf status or lock status changed (it gained
  its first child, lost its last one, or its lock count moved between 0 and 1);
* ``on_removed(node)`` when the node leaves the tree (its ``parent`` is still set);
* ``evict(n)`` to free up to n tokens through the tree API below; returns tokens freed;
* ``settle(node)`` (only if ``lazy_trim``) before the tree reads a leaf's key;
* ``check()`` from ``check_integrity``: raise IntegrityError if the policy's state
  disagrees with the tree.

The tree API for policies (public methods of ``RadixCache``; a policy calls nothing
else that mutates the tree). Every method takes unlocked leaves only and keeps the
tree's sizes exact; the caller keeps its own candidate set in step:

* ``trim_leaf(node, tokens)``: eager removal of a leaf's last ``tokens`` ids (whole
  pages); sends the ``removed`` event, and if the leaf empties unlinks it through
  ``unlink_leaf`` (so ``on_removed`` and maybe ``on_candidacy(parent)`` are called back);
* ``discard(tokens)``: for a policy that trims lazily (``lazy_trim``): account for
  tokens it has already taken off its leaves' lengths (no hook, no event: send them with
  ``emit_removed`` first when ``listening``);
* ``unlink_leaf(node)``: detach a leaf whose tokens are already discarded; calls back
  ``on_removed(node)`` and ``on_candidacy(parent)`` if the parent became a leaf;
* ``unlink_quietly(nodes)``: the same for many leaves (children before their parents),
  calling back nothing: the policy updates its candidate set for them and their parents;
* ``emit_removed(prefix, tokens)``: send a ``removed`` event for a span a lazy policy
  trimmed (call it while the span is still in ``node.key``, before ``discard``);
* read-only: ``root``, ``now``, ``capacity``, ``page_size``, ``total``, ``evictable``,
  ``listening``, ``nodes()``, ``path_of(node)``, and the walking helpers
  ``page_aligned``, ``child_key``, ``common_length`` (for a policy that keeps a tree of
  its own, as ``optimal`` does).

A node's ``mark``, ``slot`` and ``aux`` belong to the policy; the tree only copies them
on a split (``on_split`` decides). A policy never reads the wall clock or a global RNG:
randomness comes from its own seeded generator, time from ``node.last_access`` /
``cache.now``.

Capabilities are class attributes, so callers (the registry, the CLIs) decide how to
build and use a policy without knowing its name: ``needs_future``, ``takes_seed``,
``frees_whole_leaves``, ``default_request``, ``lazy_trim`` (see the class).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

from kvroute.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np

    from kvroute.cache.radix import Node, RadixCache

__all__ = ["EvictionPolicy"]


class EvictionPolicy:
    """Base class with no-op hooks; subclasses override what they need."""

    name: ClassVar[str] = ""
    #: what ``insert`` asks to free when over capacity: the deficit or the whole allocation
    default_request: ClassVar[Literal["deficit", "allocation"]] = "deficit"
    #: True if the policy trims candidate leaves lazily and provides ``settle``
    lazy_trim: ClassVar[bool] = False
    #: True if the policy must be built from the future: ``requests=[prompt, ...]``, every
    #: prompt in the order it will be served, and the cache driven with ``now`` = the
    #: request index (``kvroute.cache.ceilings.replay`` does this). Such a policy is an
    #: offline bound, not something a live engine can run.
    needs_future: ClassVar[bool] = False
    #: True if the constructor accepts ``seed`` (an int or None) for its random choices
    #: (a deterministic policy may accept and ignore it, so that callers pass it blindly)
    takes_seed: ClassVar[bool] = False
    #: True if ``evict(n)`` removes whole leaf nodes, so it may free more than n (it
    #: rounds up to whole nodes); False if it trims leaves page by page and frees exactly
    #: n rounded up to a page while unlocked tokens remain
    frees_whole_leaves: ClassVar[bool] = False
    #: why the policy cannot run where a capability is missing (for error messages)
    describe_needs: ClassVar[str] = ""

    cache: RadixCache

    def attach(self, cache: RadixCache) -> None:
        if getattr(self, "cache", None) is not None:
            raise ConfigError(f"eviction policy {self.name!r} already serves another cache;"
                              " make one policy object per cache")
        self.cache = cache

    def on_stored(self, tokens: np.ndarray, cached: int) -> None:
        pass

    def on_created(self, leaf: Node) -> None:
        self.on_candidacy(leaf)

    def on_access(self, node: Node, hit: bool) -> None:
        pass

    def on_split(self, prefix: Node, suffix: Node, in_match: bool) -> None:
        prefix.mark = suffix.mark

    def on_candidacy(self, node: Node) -> None:
        pass

    def on_removed(self, node: Node) -> None:
        pass

    def settle(self, node: Node) -> None:
        pass

    def evict(self, n: int) -> int:
        raise NotImplementedError

    def check(self) -> None:
        pass

    @staticmethod
    def is_candidate(node: Node) -> bool:
        """An unlocked leaf that is still in the tree."""
        return node.parent is not None and not node.children and node.lock_ref == 0
