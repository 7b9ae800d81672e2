"""An emulated engine started with data parallelism (vLLM's ``--data-parallel-size N``):
``N`` independent ranks behind one HTTP port, as vLLM's internal load balancer runs them.

Contract:

* :class:`DataParallelWorker` holds ``EmulatedConfig.dp_size`` ranks
  (:attr:`~DataParallelWorker.ranks`, each an :class:`EmulatedWorker` with its own
  SimWorker, radix cache and KV pool; one tokenizer and request-id counter shared).
  :meth:`~DataParallelWorker.start` starts them all on the running loop (none left
  running when one fails); :attr:`~DataParallelWorker.started` is true once all have.
* Rank choice (:meth:`~DataParallelWorker.requested_rank`, then
  :meth:`~DataParallelWorker.pick`): the header :data:`RANK_HEADER` (vLLM's
  ``X-data-parallel-rank``, any case) names the rank; a value that is not an integer in
  ``[0, N)`` is a :class:`~kvroute.protocol.request_body.BadRequest` naming the header and
  the range. Without it, the rank of least score by vLLM's own balancer
  (:func:`kvroute.routing.vllm_dp.score`: ``4 * queued + running``, here from the ranks'
  exact counts; ties: the lowest rank). A request's prompts (a batch) all go to the one
  rank.
* :meth:`~DataParallelWorker.flush` clears every rank's cache, or none while any rank has
  requests in flight (SGLang's refusal, the counts summed over the ranks).
* :meth:`~DataParallelWorker.render_metrics`: with one rank, its page unchanged; with
  more, every rank's series once per rank, labelled with the rank (vLLM's families
  ``engine="r"``, SGLang's ``dp_rank="r"``: ``EngineMetricNames.rank_label``), each
  family's HELP and TYPE once.
* :attr:`~DataParallelWorker.kv_event_endpoints`: each rank's bound KV-event addresses,
  ``(endpoint, replay_endpoint)`` in rank order (``[]`` with events off); rank ``r``
  binds the configured ports + ``r`` (``:*``: a free port each) and its batches carry
  ``data_parallel_rank = r``.
"""

from __future__ import annotations

import re

from prometheus_client import CollectorRegistry

from kvroute.protocol.request_body import RANK_HEADER, BadRequest
from kvroute.routing.vllm_dp import score
from kvroute.worker.emulated import EmulatedConfig, EmulatedWorker, flush_refused
from kvroute.worker.exported_metrics import merged_registry, render

__all__ = ["DataParallelWorker"]

_INTEGER = re.compile(r"[0-9]+")


class DataParallelWorker:
    """The ranks of one emulated engine (see the module doc)."""

    def __init__(self, config: EmulatedConfig) -> None:
        self.config = config
        first = EmulatedWorker(config, 0)
        self.ranks: list[EmulatedWorker] = [first] + [
            EmulatedWorker(config, r, share=first) for r in range(1, config.dp_size)]
        self._registry: CollectorRegistry | None = (
            merged_registry([ew.metrics for ew in self.ranks]) if len(self.ranks) > 1
            else None)

    @property
    def dp_size(self) -> int:
        return len(self.ranks)

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Start every rank on the running event loop (a failure closes those started)."""
        try:
            for ew in self.ranks:
                ew.start()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Close every rank's KV-event sockets."""
        for ew in self.ranks:
            ew.close()

    @property
    def started(self) -> bool:
        return all(ew.started for ew in self.ranks)

    @property
    def kv_event_endpoints(self) -> list[tuple[str, str | None]]:
        """Each rank's bound ``(endpoint, replay_endpoint)``, in rank order; ``[]`` when
        KV events are off (or before :meth:`start`)."""
        return [(ew.events.endpoint, ew.events.replay_endpoint)
                for ew in self.ranks if ew.events is not None]

    # ---------------------------------------------------------------- routing
    def requested_rank(self, value: str | None) -> int | None:
        """The rank a :data:`RANK_HEADER` value names (None: no header); a BadRequest when
        it names none."""
        if value is None:
            return None
        text = value.strip()
        n = self.dp_size
        if _INTEGER.fullmatch(text) is None or int(text) >= n:
            valid = "0" if n == 1 else f"0 to {n - 1}"
            raise BadRequest(f"header {RANK_HEADER}: {value!r} is not a data-parallel rank "
                             f"of this engine: give an integer in [0, {n}) ({valid})")
        return int(text)

    def pick(self, rank: int | None = None) -> EmulatedWorker:
        """Rank ``rank``'s engine, or (None) the one vLLM's balancer would pick: least
        ``score(running, queued)``, the lowest rank on a tie."""
        if rank is not None:
            return self.ranks[rank]
        return min(self.ranks, key=lambda ew: (score(ew.running, ew.waiting), ew.rank))

    # ---------------------------------------------------------------- admin
    def flush(self) -> str | None:
        """Clear every rank's radix cache; the reason none was cleared, else None."""
        if not self.started:
            return "the worker is starting"
        if any(ew.busy() for ew in self.ranks):
            return flush_refused(sum(ew.waiting for ew in self.ranks),
                                 sum(ew.running for ew in self.ranks))
        for ew in self.ranks:
            reason = ew.flush()
            assert reason is None, reason
        return None

    def render_metrics(self) -> bytes:
        """The ``/metrics`` page (see the module doc)."""
        if self._registry is None:
            return self.ranks[0].metrics.render()
        return render(self._registry)
