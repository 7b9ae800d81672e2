"""The oracle reads the workers' true state; SimWorker.predict_e2e on hand cases."""

from __future__ import annotations

import numpy as np
import pytest

from kvroute.errors import ConfigError
from kvroute.routing.base import ClusterView, RouteRequest, WorkerState
from kvroute.routing.oracle import Oracle
from kvroute.sim.events import EventLoop
from kvroute.sim.step_model import StepModel
from kvroute.sim.worker import Job, SimWorker, WorkerConfig
from kvroute.workloads.request import Request

LINEAR = StepModel(name="linear", t_w_ms=0.0, t0_ms=2.0, b_ms=0.1, c_ms=0.0, g_ms=0.0,
                   kv_pool_tokens=10_000)


class Fixed:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def predict_e2e(self, tokens: np.ndarray, output_len: int) -> float:
        return self.seconds


def test_oracle_picks_the_least_predicted_time_and_needs_probes() -> None:
    """The least predicted end-to-end time wins (ties: lowest index); no probes, no oracle."""
    workers = [WorkerState(i) for i in range(3)]
    req = RouteRequest(np.arange(10), max_tokens=4)
    view = ClusterView(workers, None, [Fixed(0.3), Fixed(0.1), Fixed(0.1)])
    d = Oracle().route(req, view)
    assert (d.worker, d.predicted_s) == (1, 0.1)
    with pytest.raises(ConfigError, match="simulator"):
        Oracle().route(req, ClusterView(workers, None))


def test_predict_e2e_uses_the_true_cache_and_backlog() -> None:
    """Idle: T0 + b x uncached, plus decode steps; a cached prefix and a queue change it."""
    loop = EventLoop()
    w = SimWorker(0, LINEAR, WorkerConfig(), loop, lambda job: None)
    prompt = np.arange(1000)
    # idle and empty: one prefill step of 1000 tokens (102 ms) + 3 decode steps of 2.1 ms
    assert w.predict_e2e(prompt, 4) == pytest.approx(0.102 + 3 * 0.0021)
    w.cache.insert(np.arange(600), 0.0)  # 600 tokens truly cached: 400 left to prefill
    assert w.predict_e2e(prompt, 1) == pytest.approx(0.042)
    w.submit(Job(Request(rid=0, tokens=np.arange(5000, 5500), output_len=1), 0, 0.0))
    # 500 queued uncached tokens join the same chunk: one step of 900 tokens
    assert w.predict_e2e(prompt, 1) == pytest.approx(0.092)
