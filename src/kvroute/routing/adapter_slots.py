"""``AdapterSlots``: how long a request for a LoRA adapter would wait on a worker for an
adapter slot, from the requests a policy has open there.

An engine runs at most so many distinct adapters at once (vLLM's ``--max-loras``,
SGLang's ``--max-loras-per-batch``; ``WorkerState.max_loras``). A request whose adapter
is not among those of the requests on a worker that uses every slot waits until one
adapter's requests there have all finished (the requests behind it go on).

Contract (times in the router's clock):

* ``sent(rid, worker, adapter, due)``: request ``rid`` for ``adapter`` went to
  ``worker`` and is expected to finish at ``due``; ``done(rid)``: it closed (an unknown
  ``rid`` is ignored).
* ``wait(worker, adapter, slots, now)``: 0 when ``adapter`` has a request open on
  ``worker`` or fewer than ``slots`` adapters do; else the seconds from ``now`` until the
  first adapter there is due to be done (the latest due of its requests, the least over
  the adapters), at least 0. A request open counts whether it runs yet or waits: what
  holds a slot soon is what was sent.
* ``remove_worker(i)``: worker ``i`` left; later workers move down by one.

Mechanism only: due times come from the policy's models.
"""

from __future__ import annotations

__all__ = ["AdapterSlots"]


class AdapterSlots:
    def __init__(self) -> None:
        self._open: dict[int, tuple[int, str]] = {}  # rid -> (worker, adapter)
        self._due: dict[int, dict[str, dict[int, float]]] = {}  # w -> adapter -> rid -> due

    def sent(self, rid: int, worker: int, adapter: str, due: float) -> None:
        self._open[rid] = (worker, adapter)
        self._due.setdefault(worker, {}).setdefault(adapter, {})[rid] = due

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

    def wait(self, worker: int, adapter: str, slots: int, now: float) -> float:
        by_adapter = self._due.get(worker)
        if not by_adapter or adapter in by_adapter or len(by_adapter) < slots:
            return 0.0
        first = min(max(dues.values()) for dues in by_adapter.values())
        return first - now if first > now else 0.0

    def remove_worker(self, index: int) -> None:
        self._due = {(w - 1 if w > index else w): v for w, v in self._due.items()
                     if w != index}
        self._open = {rid: (w - 1 if w > index else w, a)
                      for rid, (w, a) in self._open.items() if w != index}
