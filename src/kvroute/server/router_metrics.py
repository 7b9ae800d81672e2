"""Prometheus metrics the live router exports (/metrics), in a registry of its own (one per
app). What the engines export is read by :mod:`kvroute.server.engine_metrics`."""

from __future__ import annotations

import contextlib
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

__all__ = ["CONTENT_TYPE_LATEST", "RouterMetrics"]

_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_ERROR = (-10, -2.5, -1, -0.5, -0.25, -0.1, -0.05, 0, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)
_RATIO = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)


class RouterMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("kvroute_requests", "Requests received, by route",
                                ["route"], registry=r)
        self.errors = Counter("kvroute_errors", "Errors, by kind", ["kind"], registry=r)
        self.retries = Counter("kvroute_retries", "Attempts retried on another worker",
                               registry=r)
        self.in_flight = Gauge("kvroute_worker_in_flight", "Requests in flight per worker",
                               ["worker"], registry=r)
        self.healthy = Gauge("kvroute_worker_healthy", "1 when the worker is available",
                             ["worker"], registry=r)
        self.decisions = Counter("kvroute_routing_decisions", "Routing decisions",
                                 ["worker", "branch"], registry=r)
        self.predicted = Histogram("kvroute_predicted_latency_seconds",
                                   "The policy's predicted end-to-end latency",
                                   buckets=_LATENCY, registry=r)
        self.observed = Histogram("kvroute_observed_latency_seconds",
                                  "Observed end-to-end latency of requests with a prediction",
                                  buckets=_LATENCY, registry=r)
        self.prediction_error = Histogram("kvroute_prediction_error_seconds",
                                          "Observed minus predicted end-to-end latency",
                                          buckets=_ERROR, registry=r)
        self.ttft = Histogram("kvroute_ttft_seconds", "Time to first streamed chunk",
                              buckets=_LATENCY, registry=r)
        self.held = Histogram("kvroute_held_seconds", "Seconds a request was held back by "
                              "the policy before it was routed (late binding; 0: not held)",
                              buckets=(0.0, *_LATENCY), registry=r)
        self.e2e = Histogram("kvroute_e2e_seconds", "End-to-end latency of successful requests",
                             buckets=_LATENCY, registry=r)
        self.hit_ratio = Histogram("kvroute_estimated_hit_ratio",
                                   "Router-estimated prefix hit ratio of the chosen worker",
                                   buckets=_RATIO, registry=r)
        self.prompt_units = Counter("kvroute_prompt_units", "Prompt units routed", registry=r)
        self.matched_units = Counter("kvroute_estimated_matched_units",
                                     "Prompt units the router believed cached on the chosen "
                                     "worker", registry=r)
        self.reply_units = Counter("kvroute_reply_units", "Units of answers' replies recorded "
                                   "in the prefix index after their prompts (policies that "
                                   "record replies)", registry=r)
        self.cached_tokens = Counter("kvroute_engine_cached_tokens",
                                     "Cached prompt tokens the engines reported", registry=r)
        self.policy = Gauge("kvroute_policy_telemetry",
                            "What the routing policy reports about itself (e.g. learned's "
                            "predicted-vs-observed TTFT and E2E error), one series per key",
                            ["key"], registry=r)
        # expected vs reported, over the same requests (those whose engine reported
        # cached tokens); index: exact (from KV events) or approx (from routing history)
        hit = ["worker", "index"]
        self.hit_prompt = Counter("kvroute_hit_prompt_units", "Prompt units of completed "
                                  "requests whose engine reported cached tokens", hit,
                                  registry=r)
        self.hit_available = Counter("kvroute_hit_available_units", "Prompt units the best "
                                     "allowed worker was believed to hold (what was "
                                     "available)", hit, registry=r)
        self.hit_expected = Counter("kvroute_hit_expected_units", "Prompt units the router "
                                    "believed the chosen worker held (what it expected to "
                                    "capture)", hit, registry=r)
        self.hit_reported = Counter("kvroute_hit_reported_tokens", "Cached tokens the "
                                    "engine reported for the same requests (what was "
                                    "captured)", hit, registry=r)
        self.hit_reported_units = Counter(
            "kvroute_hit_reported_units", "The same in the router's units (scaled by the "
            "prompt's units over the engine's prompt tokens, when it reports those): "
            "comparable with the other kvroute_hit_* counters", hit, registry=r)

        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}

    def set_policy_telemetry(self, telemetry: dict[str, object], prefix: str = "") -> None:
        """Every number in ``telemetry`` (nested keys joined by dots, a list's items keyed
        by their index: ``ttft_coefficients.0``) as a gauge series."""
        for key, value in telemetry.items():
            name = f"{prefix}{key}"
            if isinstance(value, (list, tuple)):
                value = {str(i): v for i, v in enumerate(value)}
            if isinstance(value, dict):
                self.set_policy_telemetry(value, name + ".")
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                self.child(self.policy, name).set(float(value))

    def child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, looked up once (the hot path calls it per request)."""
        key = (id(metric), labels)
        c = self._children.get(key)
        if c is None:
            c = self._children[key] = metric.labels(*labels)
        return c

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def forget_worker(self, url: str) -> None:
        self._children = {k: c for k, c in self._children.items() if url not in k[1]}
        for g in (self.in_flight, self.healthy):
            with contextlib.suppress(KeyError):
                g.remove(url)
