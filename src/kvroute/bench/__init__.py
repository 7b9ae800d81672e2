"""Load generator: replay kvroute's workloads against a real OpenAI/SGLang endpoint.

``kvroute bench --url URL --workload gsp`` sends the same :class:`~kvroute.workloads.request.
Request` objects the simulator consumes, measures TTFT / E2E / tokens client-side and the
cluster's prefix-cache hit rate from the workers' Prometheus ``/metrics``.

Modules: :mod:`~kvroute.bench.config` (what to run), :mod:`~kvroute.bench.loadgen` (the
drivers), :mod:`~kvroute.bench.client` (one request over HTTP),
:mod:`~kvroute.bench.results` (what was observed), :mod:`~kvroute.bench.scrape` (the
engines' cache counters), :mod:`~kvroute.bench.summary` (the run's summary).
"""

from __future__ import annotations

from kvroute.bench.client import check_endpoint, http_request
from kvroute.bench.config import BenchConfig
from kvroute.bench.loadgen import run_bench, run_workload
from kvroute.bench.results import BenchRun, RequestResult
from kvroute.bench.scrape import cache_counters, metrics_hit_rate
from kvroute.bench.summary import summarize

__all__ = ["BenchConfig", "BenchRun", "RequestResult", "cache_counters", "check_endpoint",
           "http_request", "metrics_hit_rate", "run_bench", "run_workload", "summarize"]
