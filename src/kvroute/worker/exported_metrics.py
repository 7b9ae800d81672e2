"""The emulated worker's ``/metrics``: SGLang's and vLLM's engine metrics at once, with
the names of :mod:`kvroute.protocol.metric_names`, on a Prometheus registry of this
worker's own (several workers can run in one process).

* Counters move together for both engines: :meth:`ExportedMetrics.prefilled` (a request's
  prompt reached its first token: prompt tokens, cache hits and lookups),
  :meth:`~ExportedMetrics.generated` and :meth:`~ExportedMetrics.finished`.
* Gauges (running, waiting, KV usage) are read from the callables given, when scraped;
  the KV capacity is fixed (vLLM's as one-token blocks), and so is the cap on running
  requests, exported under SGLang's name when the worker has one (vLLM reports none).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client import generate_latest as _generate_latest

from kvroute.protocol.metric_names import ENGINES, SGLANG, VLLM

__all__ = ["ExportedMetrics"]


class ExportedMetrics:
    def __init__(self, model_name: str, capacity: int, running: Callable[[], float],
                 waiting: Callable[[], float], kv_usage: Callable[[], float],
                 max_running: int | None = None) -> None:
        r = self.registry = CollectorRegistry()
        lab = ["model_name"]

        def counter(name: str, doc: str) -> Any:
            return Counter(name, doc, lab, registry=r).labels(model_name)

        def gauge(name: str, doc: str, fn: Callable[[], float]) -> None:
            Gauge(name, doc, lab, registry=r).labels(model_name).set_function(fn)

        self._prompt: list[Any] = []
        self._generated: list[Any] = []
        self._finished: list[Any] = []
        self._hits: list[Any] = []
        self._queries: list[Any] = []
        for e in ENGINES:
            self._prompt.append(counter(e.prompt_tokens, "Prompt tokens processed"))
            self._generated.append(counter(e.generation_tokens, "Generated tokens"))
            self._finished.append(counter(e.requests_finished, "Requests finished"))
            self._hits.append(counter(e.cache_hits, "Prompt tokens served from the cache"))
            if e.cache_queries != e.prompt_tokens:  # SGLang's lookups are its prompt tokens
                self._queries.append(counter(e.cache_queries,
                                             "Prompt tokens looked up in the cache"))
            gauge(e.running, "Running requests", running)
            gauge(e.waiting, "Queued requests", waiting)
            for name in e.kv_usage:
                gauge(name, "Fraction of the KV pool in use", kv_usage)
        gauge(SGLANG.kv_capacity, "KV pool size in tokens", lambda: capacity)
        if max_running is not None:
            gauge(SGLANG.max_running, "Maximum running requests", lambda: max_running)
        Gauge(VLLM.kv_capacity, "KV cache configuration", ["block_size", "num_gpu_blocks"],
              registry=r).labels("1", str(capacity)).set(1)

    def prefilled(self, prompt: int, cached: int) -> None:
        """A request's ``prompt`` tokens were processed, ``cached`` of them from the cache."""
        for c in self._prompt + self._queries:
            c.inc(prompt)
        for c in self._hits:
            c.inc(cached)

    def generated(self, tokens: int) -> None:
        for c in self._generated:
            c.inc(tokens)

    def finished(self) -> None:
        for c in self._finished:
            c.inc()

    def render(self) -> bytes:
        return bytes(_generate_latest(self.registry))
