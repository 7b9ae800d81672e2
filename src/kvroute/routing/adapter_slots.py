"""``AdapterSlots``: how long a request for a LoRA adapter would wait on a worker for an
adapter slot, from the requests a policy has open there.

An engine runs at most so many distinct adapters at once (vLLM's ``--max-loras``,
SGLang's ``--max-loras-per-batch``; ``WorkerState.max_loras``). A request whose adapter
is not among those of the requests on a worker that uses every slot waits until one
adapter's requests there have all finished (the requests behind it go on).

Contract (times in the router's clock):

* ``sent(rid, worker, adapter, due, now)``: request ``rid`` for ``adapter`` went to
  ``worker`` at ``now`` and is expected to finish at ``due``; ``done(rid)``: it closed
  (an unknown ``rid`` is ignored). Each (worker, adapter) keeps the mean gap between its
  requests and their mean span (``forget``'s average) for as long as the worker does.
* ``wait(worker, adapter, slots, now)``: 0 when ``adapter`` has a request open on
  ``worker`` or fewer than ``slots`` adapters do; else the seconds from ``now`` until the
  first adapter there is expected to be done, at least 0. An adapter is done when no
  request for it is open there, and requests for it keep coming while it runs: its
  expected span is the longer of the latest due of its open requests and the mean busy
  period of an M/G/infinity queue with its arrival rate there ``lam`` (from the gaps
  between the requests sent there) and its requests' mean span ``s`` (due less sent):
  ``(exp(lam s) - 1) / lam`` (``s`` where nothing arrives: short requests free a slot
  soon, a stream of long ones holds it for good). A request open counts whether it runs
  yet or waits: what holds a slot soon is what was sent. With ``elsewhere`` (the adapter
  has requests open on another worker) a worker's last free slot counts as taken: it is
  kept for an adapter open nowhere, which has no other place to go (without the
  reserve, popular adapters spread into every slot and a rare one waited a busy period:
  docs/routing-results.md, "LoRA adapters").
* ``remove_worker(i)``: worker ``i`` left; later workers move down by one.

Mechanism only: due times come from the policy's models.
"""

from __future__ import annotations

import math

__all__ = ["AdapterSlots"]


class AdapterSlots:
    """``forget``: the weight an average keeps per sample, once it has ``1 / (1 - forget)``
    of them (before, the plain mean)."""

    def __init__(self, forget: float = 0.998) -> None:
        self.forget = forget
        self._open: dict[int, tuple[int, str]] = {}  # rid -> (worker, adapter)
        self._due: dict[int, dict[str, dict[int, float]]] = {}  # w -> adapter -> rid -> due
        # (worker, adapter) -> [last sent, mean gap, mean span, samples]
        self._flow: dict[tuple[int, str], list[float]] = {}

    def sent(self, rid: int, worker: int, adapter: str, due: float, now: float) -> None:
        self._open[rid] = (worker, adapter)
        self._due.setdefault(worker, {}).setdefault(adapter, {})[rid] = due
        flow = self._flow.get((worker, adapter))
        if flow is None:
            self._flow[(worker, adapter)] = [now, math.inf, due - now, 1.0]
            return
        n = flow[3] + 1.0
        k = max(1.0 - self.forget, 1.0 / n)
        gap = now - flow[0]
        flow[1] = gap if flow[1] == math.inf else flow[1] + k * (gap - flow[1])
        flow[2] += k * (due - now - flow[2])
        flow[0], flow[3] = now, n

    def done(self, rid: int) -> None:
        where = self._open.pop(rid, None)
        if where is None:
            return
        worker, adapter = where
        by_adapter = self._due[worker]
        dues = by_adapter[adapter]
        del dues[rid]
        if not dues:
            del by_adapter[adapter]

    def wait(self, worker: int, adapter: str, slots: int, now: float,
             elsewhere: bool = False) -> float:
        by_adapter = self._due.get(worker)
        if elsewhere and slots > 1:
            slots -= 1  # the last slot is kept for an adapter open nowhere
        if not by_adapter or adapter in by_adapter or len(by_adapter) < slots:
            return 0.0
        return max(0.0, min(self._span(worker, a, dues, now) for a, dues in by_adapter.items()))

    def _span(self, worker: int, adapter: str, dues: dict[int, float], now: float) -> float:
        """How long ``adapter`` is expected to hold its slot on ``worker`` from ``now``."""
        latest = max(dues.values()) - now
        _, gap, span, _ = self._flow[(worker, adapter)]
        if gap == math.inf or gap <= 0.0:
            return max(latest, span)
        lam = 1.0 / gap
        return max(latest, math.expm1(min(lam * span, 50.0)) / lam)

    def remove_worker(self, index: int) -> None:
        self._due = {(w - 1 if w > index else w): v for w, v in self._due.items()
                     if w != index}
        self._flow = {(w - 1 if w > index else w, a): v for (w, a), v in self._flow.items()
                      if w != index}
        self._open = {rid: (w - 1 if w > index else w, a)
                      for rid, (w, a) in self._open.items() if w != index}
