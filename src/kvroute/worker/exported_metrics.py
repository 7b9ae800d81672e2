"""The emulated worker's ``/metrics``: SGLang's and vLLM's engine metrics at once, with
the names of :mod:`kvroute.protocol.metric_names`, on a Prometheus registry of this
worker's own (several workers can run in one process).

* Counters move together for both engines: :meth:`ExportedMetrics.prefilled` (a request's
  prompt reached its first token: prompt tokens, cache hits and lookups),
  :meth:`~ExportedMetrics.generated` and :meth:`~ExportedMetrics.finished`.
* Gauges (running, waiting, KV usage) are read from the callables given, when scraped;
  the KV capacity is fixed (vLLM's as one-token blocks), and so is the cap on running
  requests, exported under SGLang's name when the worker has one (vLLM reports none).
* Data parallelism: the metrics of rank ``dp_rank`` (None: an engine without it, whose
  page is as above) carry the rank as each engine labels it
  (``EngineMetricNames.rank_label``: vLLM's families ``engine="r"``, SGLang's
  ``dp_rank="r"``). :func:`merged_registry` renders the ranks' registries as one page:
  each family's HELP and TYPE once, then the samples of every rank in rank order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client import generate_latest as _generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from kvroute.protocol.metric_names import ENGINES, SGLANG, VLLM, EngineMetricNames

__all__ = ["ExportedMetrics", "merged_registry", "render"]


class ExportedMetrics:
    def __init__(self, model_name: str, capacity: int, running: Callable[[], float],
                 waiting: Callable[[], float], kv_usage: Callable[[], float],
                 max_running: int | None = None, dp_rank: int | None = None,
                 max_loras: int | None = None) -> None:
        r = self.registry = CollectorRegistry()
        self.dp_rank = dp_rank

        def labels(e: EngineMetricNames, names: list[str], values: list[str]
                   ) -> tuple[list[str], list[str]]:
            if dp_rank is None:
                return names, values
            return [*names, e.rank_label], [*values, str(dp_rank)]

        def counter(name: str, doc: str, e: EngineMetricNames) -> Any:
            lab, val = labels(e, ["model_name"], [model_name])
            return Counter(name, doc, lab, registry=r).labels(*val)

        def gauge(name: str, doc: str, fn: Callable[[], float],
                  e: EngineMetricNames) -> None:
            lab, val = labels(e, ["model_name"], [model_name])
            Gauge(name, doc, lab, registry=r).labels(*val).set_function(fn)

        self._prompt: list[Any] = []
        self._generated: list[Any] = []
        self._finished: list[Any] = []
        self._hits: list[Any] = []
        self._queries: list[Any] = []
        for e in ENGINES:
            self._prompt.append(counter(e.prompt_tokens, "Prompt tokens processed", e))
            self._generated.append(counter(e.generation_tokens, "Generated tokens", e))
            self._finished.append(counter(e.requests_finished, "Requests finished", e))
            self._hits.append(counter(e.cache_hits, "Prompt tokens served from the cache", e))
            if e.cache_queries != e.prompt_tokens:  # SGLang's lookups are its prompt tokens
                self._queries.append(counter(e.cache_queries,
                                             "Prompt tokens looked up in the cache", e))
            gauge(e.running, "Running requests", running, e)
            gauge(e.waiting, "Queued requests", waiting, e)
            for name in e.kv_usage:
                gauge(name, "Fraction of the KV pool in use", kv_usage, e)
        gauge(SGLANG.kv_capacity, "KV pool size in tokens", lambda: capacity, SGLANG)
        if max_running is not None:
            gauge(SGLANG.max_running, "Maximum running requests", lambda: max_running, SGLANG)
        lab, val = labels(VLLM, ["block_size", "num_gpu_blocks"], ["1", str(capacity)])
        Gauge(VLLM.kv_capacity, "KV cache configuration", lab, registry=r).labels(*val).set(1)
        if max_loras is not None:  # vLLM's form: the cap in a label (the adapters' left empty)
            lab, val = labels(VLLM, ["max_lora", "running_lora_adapters",
                                     "waiting_lora_adapters"], [str(max_loras), "", ""])
            Gauge(VLLM.lora_info, "LoRA requests", lab, registry=r).labels(*val).set(1)

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
        return render(self.registry)


class _Merged(Collector):
    """The families of several registries, each once, with the samples of all."""

    def __init__(self, registries: Sequence[CollectorRegistry]) -> None:
        self._registries = list(registries)

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        for registry in self._registries:
            for m in registry.collect():
                family = families.get(m.name)
                if family is None:
                    family = families[m.name] = Metric(m.name, m.documentation, m.type,
                                                       m.unit)
                family.samples.extend(m.samples)
        yield from families.values()


def merged_registry(ranks: Sequence[ExportedMetrics]) -> CollectorRegistry:
    """One registry rendering the metrics of every rank (labelled by their ``dp_rank``)."""
    registry = CollectorRegistry()
    registry.register(_Merged([m.registry for m in ranks]))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """A registry's page in Prometheus' text format."""
    return bytes(_generate_latest(registry))
