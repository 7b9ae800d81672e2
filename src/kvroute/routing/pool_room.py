"""``PoolRoom``: how long a request routed to a worker would wait for room in the worker's
KV pool, or for a running slot, from the requests a policy has open there.

An engine admits a request only when its pool can take the request's uncached prompt, its
output and the cached prefix it locks (SGLang's scheduler, vLLM's block allocation), and,
where it caps its running requests, when a slot is free. A few long prompts decoding on a
worker can hold most of its pool for hundreds of steps, and many short decodes its
slots: nothing else is admitted there meanwhile, and nothing is queued there for
prefill, so an estimate from the prefill queue reads the worker as free.

Contract (sizes and the pool in the router's units, times in the router's clock):

* ``sent(worker, now)`` / ``closed(worker, sent)``: a request was routed to ``worker`` at
  ``now`` / the one sent then closed. ``need(units, out, worker, matched, last,
  per_token)``: the units of ``worker``'s pool a request of ``units`` prompt units and
  ``out`` output tokens (None: unknown, 0) needs to be admitted: its prompt and output
  (``per_token`` units a token), less the ``matched`` prefix where the request that last
  carried it there (sent at ``last``, ``view.last_sent``) is still open: that request
  holds it, locked, so it takes no room and is not evicted.
* ``started(rid, worker, size, due)``: request ``rid``'s first token came back from
  ``worker``; it holds about ``size`` units of the pool until it finishes, expected at
  ``due``. ``done(rid)``: it finished or failed (a request never started is ignored).
* ``wait(worker, need, pool, used, now)``: the seconds from ``now`` until a request that
  needs ``need`` units would find room on ``worker``, whose pool of ``pool`` units has
  ``used`` in use (as its engine reports it). The requests decoding there hold their
  sizes, scaled down to ``used`` together where they add up to more (prompts that share
  a prefix hold it once), and free them when due, earliest first. 0 when the request
  fits now, and 0 when it would not fit even once they are all done: what else holds the
  pool (requests admitted and still prefilling) is not known here, and no wait is
  claimed for it. A lower bound, then, on the wait for room. ``held(worker)``: the
  sizes decoding there, summed (unscaled; 0: no wait is possible).
* ``slot_wait(worker, k, now)``: the seconds from ``now`` until the ``k``-th of the
  requests decoding on ``worker`` is due to finish, earliest first: when a request that
  is ``k``-th in line for a running slot there (an engine with a cap on running requests
  admits in order as they free) would get one. 0 when none decodes there; with fewer
  than ``k`` decoding, the last one's due time (the other holders' ends are not known
  here: a lower bound, as for the pool).
* ``remove_worker(i)``: worker ``i`` left; later workers move down by one.

Mechanism only: sizes, needs and due times come from the policy's models.
"""

from __future__ import annotations

__all__ = ["PoolRoom"]


class PoolRoom:
    def __init__(self) -> None:
        self._worker: dict[int, int] = {}  # rid -> its worker, while it decodes
        self._decoding: dict[int, dict[int, tuple[float, float]]] = {}  # w -> rid -> (due, size)
        self._held: dict[int, float] = {}  # w -> the sizes decoding there, summed
        self._sent: dict[tuple[int, float], int] = {}  # (worker, sent) -> open requests

    def sent(self, worker: int, now: float) -> None:
        key = (worker, now)
        self._sent[key] = self._sent.get(key, 0) + 1

    def closed(self, worker: int, sent: float) -> None:
        key = (worker, sent)
        if self._sent.get(key, 1) > 1:
            self._sent[key] -= 1
        else:
            self._sent.pop(key, None)

    def need(self, units: int, out: float | None, worker: int, matched: float, last: float,
             per_token: float) -> float:
        held = matched if (worker, last) in self._sent else 0.0
        return units + (0.0 if out is None else out * per_token) - held

    def started(self, rid: int, worker: int, size: float, due: float) -> None:
        self._worker[rid] = worker
        self._decoding.setdefault(worker, {})[rid] = (due, size)
        self._held[worker] = self._held.get(worker, 0.0) + size

    def done(self, rid: int) -> None:
        w = self._worker.pop(rid, None)
        if w is None:
            return
        decoding = self._decoding[w]
        _, size = decoding.pop(rid)
        self._held[w] = self._held[w] - size if decoding else 0.0

    def left(self, now: float) -> float | None:
        """The mean predicted decode seconds left (not below 0) over the requests
        decoding on every worker; None if none is."""
        total, count = 0.0, 0
        for decoding in self._decoding.values():
            count += len(decoding)
            for due, _ in decoding.values():
                if due > now:
                    total += due - now
        return total / count if count else None

    def held(self, worker: int) -> float:
        return self._held.get(worker, 0.0)

    def wait(self, worker: int, need: float, pool: float, used: float, now: float) -> float:
        total = self._held.get(worker, 0.0)
        scale = min(1.0, used / total) if total > 0 else 0.0
        free = pool - total * scale
        if need <= free or need > pool:
            return 0.0
        for due, size in sorted(self._decoding[worker].values()):
            free += size * scale
            if need <= free:
                return max(0.0, due - now)
        return 0.0

    def slot_wait(self, worker: int, k: int, now: float) -> float:
        decoding = self._decoding.get(worker)
        if not decoding or k < 1:
            return 0.0
        dues = sorted(due for due, _ in decoding.values())
        return max(0.0, dues[min(k, len(dues)) - 1] - now)

    def remove_worker(self, index: int) -> None:
        def moved(w: int) -> int:
            return w - 1 if w > index else w
        self._decoding = {moved(w): d for w, d in self._decoding.items() if w != index}
        self._held = {moved(w): h for w, h in self._held.items() if w != index}
        self._worker = {rid: moved(w) for rid, w in self._worker.items() if w != index}
        self._sent = {(moved(w), t): c for (w, t), c in self._sent.items() if w != index}
