"""``prefix_hash``: consistent hashing on the prompt's prefix, with a load guard (SMG).

Algorithm:

* The ring holds ``virtual_nodes`` points per worker; the point of virtual node ``j`` of
  worker ``i`` is the first 8 bytes (big-endian) of ``blake2b("worker-{i}-vnode-{j}")``.
  Python's salted ``hash()`` is never used, so placement is the same in every process.
* A request's key is ``blake2b`` of its first ``prefix_units`` units (as little-endian
  int64). Its ring owner is the worker of the first point at or after the key, wrapping
  around (points that collide are ordered by worker, then virtual node), skipping the
  points of workers not allowed for this request (so their keys spread over the others).
* With ``L_w`` the router-counted requests in flight, ``n`` allowed workers and ``T`` the
  sum of their ``L``: take the owner if ``L_owner <= load_factor * (T + 1) / n`` (branch
  ``"owner"``), else the least-loaded allowed worker, ties to the lowest index (branch
  ``"overload"``).
* The ring is rebuilt when the membership changes (``on_workers_changed``), and lazily
  whenever the view's worker count differs from the ring's.

Parameters (defaults): ``seed`` 0 (unused, the rule is deterministic), ``prefix_units``
256 (the published "first 256 tokens"), ``virtual_nodes`` 160 per worker, ``load_factor``
1.25.
"""

from __future__ import annotations

from hashlib import blake2b

import numpy as np

from kvroute.params import integer, number
from kvroute.routing.base import ClusterView, Decision, RouteRequest, RoutingPolicy
from kvroute.routing.registry import register

__all__ = ["PrefixHash", "prefix_key", "ring_point"]


def ring_point(worker: int, vnode: int) -> int:
    """The ring position of virtual node ``vnode`` of ``worker`` (a stable 64-bit hash)."""
    digest = blake2b(f"worker-{worker}-vnode-{vnode}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def prefix_key(units: np.ndarray, prefix_units: int) -> int:
    """The ring position of a prompt: a stable 64-bit hash of its first ``prefix_units``."""
    head = np.ascontiguousarray(units[:prefix_units], dtype="<i8")
    return int.from_bytes(blake2b(head.tobytes(), digest_size=8).digest(), "big")


@register
class PrefixHash(RoutingPolicy):
    name = "prefix_hash"

    def __init__(self, seed: int = 0, prefix_units: int = 256, virtual_nodes: int = 160,
                 load_factor: float = 1.25) -> None:
        super().__init__(seed)
        self.prefix_units: int = integer(self.name, "prefix_units", prefix_units, low=1)
        self.virtual_nodes: int = integer(self.name, "virtual_nodes", virtual_nodes, low=1)
        self.load_factor: float = number(self.name, "load_factor", load_factor, low=1.0,
                                         hint="(1 = never above the mean)")
        self._n: int = 0
        self._points: np.ndarray = np.empty(0, dtype=np.uint64)
        self._owners: np.ndarray = np.empty(0, dtype=np.int64)

    def _build(self, n: int) -> None:
        ring = sorted((ring_point(i, j), i, j) for i in range(n)
                      for j in range(self.virtual_nodes))
        self._points = np.array([p for p, _, _ in ring], dtype=np.uint64)
        self._owners = np.array([i for _, i, _ in ring], dtype=np.int64)
        self._n = n

    def on_workers_changed(self, count: int) -> None:
        self._build(count)

    def owner(self, units: np.ndarray, workers: int, allowed: np.ndarray | None = None) -> int:
        """The ring owner of a prompt among ``workers`` workers, the first one ``allowed``
        marks (None: any) from the prompt's key on (no load guard)."""
        if workers != self._n:
            self._build(workers)
        pos = int(np.searchsorted(self._points, np.uint64(prefix_key(units, self.prefix_units))))
        owner = int(self._owners[pos % len(self._owners)])
        if allowed is None or allowed[owner]:
            return owner
        ring = np.concatenate((self._owners[pos:], self._owners[:pos]))
        return int(ring[np.argmax(allowed[ring])])

    def route(self, req: RouteRequest, view: ClusterView) -> Decision:
        w = self.owner(req.units, len(view), view.allowed)
        load = view.in_flight()
        allowed = load[view.candidates()]
        if load[w] <= self.load_factor * (int(allowed.sum()) + 1) / len(allowed):
            return Decision(w, branch="owner")
        return Decision(view.argmin(load), branch="overload")
