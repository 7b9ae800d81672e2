"""Load generator: replay kvroute's workloads against a real OpenAI/SGLang endpoint.

``kvroute bench --url URL --workload gsp`` sends the same :class:`~kvroute.workloads.request.
Request` objects the simulator consumes, measures TTFT / E2E / tokens client-side and the
cluster's prefix-cache hit rate from the workers' Prometheus ``/metrics``.
"""

from __future__ import annotations

from kvroute.bench.loadgen import (
    APIS,
    BenchConfig,
    BenchRun,
    RequestResult,
    check_endpoint,
    http_request,
    run_bench,
    run_workload,
)
from kvroute.bench.report import cache_counters, metrics_hit_rate, summarize

__all__ = ["APIS", "BenchConfig", "BenchRun", "RequestResult", "cache_counters",
           "check_endpoint", "http_request", "metrics_hit_rate", "run_bench", "run_workload",
           "summarize"]
