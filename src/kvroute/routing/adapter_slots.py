"""``AdapterSlots``: how long a request for a LoRA adapter would wait on a worker for an
adapter slot, from the requests a policy has open there.

An engine runs at most so many distinct adapters at once (vLLM's ``--max-loras``,
SGLang's ``--max-loras-per-batch``; ``WorkerState.max_loras``). A request whose adapter
is not among those of the requests on a worker that uses every slot waits until one
adapter's requests there have all finished (the requests behind it go on).

Contract (times in the router's clock):

* ``sent(rid, worker, adapter, due, now)``: request ``rid`` for ``adapter`` went to
  ``worker`` at ``now`` and is expected to finish at ``due``; ``done(rid, now)``: it
  closed (an unknown ``rid`` is ignored). Each (worker, adapter) keeps the mean gap
  between its requests and their mean span (``forget``'s average) for as long as the
  worker does. The adapters open on a worker hold its slots in the order they opened:
  the first ``slots`` run, the others wait (the engine's queue passes them over).
* ``wait(worker, adapter, slots, now)``: 0 when ``adapter`` holds a slot on ``worker``
  or, not open there, finds fewer than ``slots`` adapters open; else the seconds from
  ``now`` until the first holder there is expected to be done, at least 0. An adapter is
  done when no request for it is open there, and requests for it keep coming while it
  runs: its expected span is the longer of the latest due of its open requests and the
  mean busy period of an M/G/infinity queue with its arrival rate there ``lam`` (from
  the gaps between the requests sent there) and its requests' mean span ``s`` (due less
  sent): ``(exp(lam s) - 1) / lam`` (``s`` where nothing arrives: short requests free a
  slot soon, a stream of long ones holds it for good). A request open counts whether it
  runs yet or waits: what holds a slot soon is what was sent. A holder that also holds a
  slot on another worker where nothing waits is expected to be done when its open
  requests there are due, without a busy period: its next requests can go to that copy
  (the price below charges it for those waiting behind it), so its slot here drains.
  With ``elsewhere`` (the adapter has requests open on another worker) a worker's last
  free slot counts as taken: it is kept for an adapter open nowhere, which has no other
  place to go (without the reserve, popular adapters spread into every slot and a rare
  one waited a busy period: docs/routing-results.md, "LoRA adapters").
* ``closed(worker, adapter, slots)``: True where ``adapter``'s request would queue for a
  slot on ``worker`` (every slot taken, none its own) while the adapter is open on
  another worker: an adapter waits in one place, and runs in one slot when its turn
  comes (spread over several queues, each copy later takes a slot and a span of its
  own, and a conversation's turns leave its cache).
* ``cluster(adapter, workers)``: once per decision, from the engines' reports
  (``WorkerState.adapters`` and ``max_loras``): how many workers have ``adapter`` open,
  and ``slot_rates`` of the slots free in the cluster (zero rates where a worker reports
  no cap: it has slots enough).
* ``slot_rates(free)`` and ``price(worker, adapter, due, now, rates, slots)``: what a
  placement's hold on a slot costs others, in seconds of their wait. The placement adds
  slot-seconds on ``worker``: ``due - now`` where its adapter is not open there (it
  opens a slot), else what ``due`` extends the latest due of the adapter's open
  requests there (at least 0). Each such second delays every request waiting there
  behind the adapter's slot (a holder's only), one second each, and costs the adapters
  that arrive *cold* (open on no worker: they need a free slot) a rate: cold arrivals
  come at rate ``lam`` (from the gaps between them) and hold the slot they open for
  ``H`` on average (from the holds that ended; the first opening's span before any
  has), an Erlang loss system of offered load ``A = lam H`` whose blocking with ``c``
  free slots is Erlang B ``B(c, A)``. One slot fewer for a second blocks ``lam (B(c - 1)
  - B(c))`` more of them, and one that finds no slot waits about ``H`` (the next cold
  hold to end), so the rate is ``A (B(c - 1) - B(c))``, with ``c`` the free slots
  counting the one at stake: ``max(free, 1)`` for a slot opened, ``free + 1`` for one
  extended; ``slot_rates(free)`` gives both, once per decision, zero before the second
  cold arrival. Without the price, `learned` sent a popular adapter's requests wherever
  they would be served soonest, and its copies took the slots rare adapters then waited
  for (docs/routing-results.md, "LoRA adapters").
* ``remove_worker(i)``: worker ``i`` left; later workers move down by one.

Mechanism only: due times come from the policy's models.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kvroute.routing.base import WorkerState

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
        self._where: dict[str, int] = {}  # adapter -> the workers it is open on
        self._opened: dict[tuple[int, str], float] = {}  # a slot opened cold -> when
        self._cold = [math.nan, math.inf, 0.0]  # last cold arrival, mean gap, gaps seen
        self._hold = [0.0, 0.0]  # mean hold of a slot opened cold, holds seen
        self._blocking: tuple[float, list[float]] = (math.nan, [])  # load, Erlang B by k

    def _average(self, acc: list[float], i: int, x: float, n: float) -> None:
        """``acc[i]`` becomes the average of its ``n`` samples with ``x`` the last."""
        k = max(1.0 - self.forget, 1.0 / n)
        acc[i] += k * (x - acc[i])

    def sent(self, rid: int, worker: int, adapter: str, due: float, now: float) -> None:
        self._open[rid] = (worker, adapter)
        by_adapter = self._due.setdefault(worker, {})
        if adapter not in by_adapter:  # it opens a slot
            where = self._where.get(adapter, 0)
            if not where:  # a cold arrival
                cold = self._cold
                if cold[0] == cold[0]:  # not the first
                    cold[2] += 1.0
                    if cold[1] == math.inf:
                        cold[1] = now - cold[0]
                    else:
                        self._average(cold, 1, now - cold[0], cold[2])
                cold[0] = now
                self._opened[(worker, adapter)] = now
                if not self._hold[1]:
                    self._hold[0] = due - now
            self._where[adapter] = where + 1
        by_adapter.setdefault(adapter, {})[rid] = due
        flow = self._flow.get((worker, adapter))
        if flow is None:
            self._flow[(worker, adapter)] = [now, math.inf, due - now, 1.0]
            return
        n = flow[3] + 1.0
        gap = now - flow[0]
        if flow[1] == math.inf:
            flow[1] = gap
        else:
            self._average(flow, 1, gap, n)
        self._average(flow, 2, due - now, n)
        flow[0], flow[3] = now, n

    def done(self, rid: int, now: float) -> None:
        where = self._open.pop(rid, None)
        if where is None:
            return
        worker, adapter = where
        by_adapter = self._due[worker]
        dues = by_adapter[adapter]
        del dues[rid]
        if not dues:  # its slot frees
            del by_adapter[adapter]
            self._where[adapter] -= 1
            opened = self._opened.pop(where, None)
            if opened is not None:
                hold = self._hold
                hold[1] += 1.0
                self._average(hold, 0, now - opened, hold[1])

    def wait(self, worker: int, adapter: str, slots: int, now: float,
             elsewhere: bool = False) -> float:
        by_adapter = self._due.get(worker)
        if not by_adapter:
            return 0.0
        # the first opened run, the others wait
        holders = by_adapter if len(by_adapter) <= slots else list(by_adapter)[:slots]
        if adapter in holders:
            return 0.0
        # the last slot is kept for an adapter open nowhere
        if adapter not in by_adapter and len(by_adapter) < slots - (elsewhere and slots > 1):
            return 0.0
        return max(0.0, min(self._span(worker, a, by_adapter[a], now, slots) for a in holders))

    def closed(self, worker: int, adapter: str, slots: int) -> bool:
        """Whether ``adapter``'s next request should not go to ``worker``: it would queue
        there for a slot (every slot taken, none its own) while it is open on another
        worker. An adapter waits in one place and runs in one slot when its turn comes;
        spread over several queues, each of its copies takes a slot and a span of its own
        (docs/routing-results.md, "LoRA adapters")."""
        by_adapter = self._due.get(worker)
        return (by_adapter is not None and len(by_adapter) >= slots
                and adapter not in by_adapter and self._where.get(adapter, 0) > 0)

    def _copy(self, worker: int, adapter: str, slots: int) -> bool:
        """Whether ``adapter`` holds a slot on another worker where nothing waits (each
        worker's cap taken as ``slots``: the engines of one deployment share theirs)."""
        if self._where.get(adapter, 0) < 2:
            return False
        return any(w != worker and adapter in by_adapter and len(by_adapter) <= slots
                   for w, by_adapter in self._due.items())

    def cluster(self, adapter: str,
                workers: Sequence[WorkerState]) -> tuple[int, tuple[float, float]]:
        hot = free = 0
        capped = True
        for ws in workers:
            hot += adapter in ws.adapters
            if not ws.max_loras:
                capped = False
            elif ws.max_loras > len(ws.adapters):
                free += ws.max_loras - len(ws.adapters)
        return hot, self.slot_rates(free) if capped else (0.0, 0.0)

    def slot_rates(self, free: int) -> tuple[float, float]:
        """Seconds of cold arrivals' wait per slot-second: (a slot opened, one extended)."""
        gap, hold = self._cold[1], self._hold[0]
        if gap == math.inf or gap <= 0.0 or hold <= 0.0:
            return 0.0, 0.0
        load = hold / gap
        c = free if free > 1 else 1
        b = self._erlang(load, free + 1)
        return load * (b[c - 1] - b[c]), load * (b[free] - b[free + 1])

    def _erlang(self, load: float, top: int) -> list[float]:
        """Erlang B ``B(k, load)`` for k = 0 .. ``top`` at least, by the recursion ``B(k) = A
        B(k - 1) / (k + A B(k - 1))``; kept while ``load`` stays (it moves only with a cold
        arrival or the end of a cold hold) and 0 once under 1e-12 (blocking nil)."""
        if self._blocking[0] != load:
            self._blocking = (load, [1.0])
        b = self._blocking[1]
        while len(b) <= top:
            last = b[-1]
            b.append(load * last / (len(b) + load * last) if last >= 1e-12 else 0.0)
        return b

    def price(self, worker: int, adapter: str, due: float, now: float,
              rates: tuple[float, float], slots: int) -> float:
        """Seconds of others' wait the slot-seconds of this placement cost."""
        by_adapter = self._due.get(worker)
        dues = by_adapter.get(adapter) if by_adapter is not None else None
        if by_adapter is None or not dues:
            return (due - now) * rates[0] if due > now else 0.0
        extra = due - max(dues.values())
        if extra <= 0.0:
            return 0.0
        behind = 0.0  # the requests of adapters waiting for a slot there (a holder's only)
        if len(by_adapter) > slots:
            names = list(by_adapter)
            if adapter in names[:slots]:
                behind = float(sum(len(by_adapter[a]) for a in names[slots:]))
        return extra * (rates[1] + behind)

    def _span(self, worker: int, adapter: str, dues: dict[int, float], now: float,
              slots: int) -> float:
        """How long ``adapter`` is expected to hold its slot on ``worker`` from ``now``."""
        latest = max(dues.values()) - now
        if self._copy(worker, adapter, slots):  # its requests can go to the copy
            return latest
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
        self._opened = {(w - 1 if w > index else w, a): t
                        for (w, a), t in self._opened.items() if w != index}
        self._where = {}
        for by_adapter in self._due.values():
            for a in by_adapter:
                self._where[a] = self._where.get(a, 0) + 1
