"""``llmd_lora``: llm-d's profile behind the LoRA affinity filter, on hand-built views."""

from __future__ import annotations

import numpy as np
import pytest

from kvroute.routing.base import ClusterView, RouteRequest, WorkerState
from kvroute.routing.llmd_lora import LlmDLora
from kvroute.routing.prefix_index import PrefixIndex


def view() -> ClusterView:
    """Worker 0 runs adapter a, worker 1 adapter b, each at its cap of 1; worker 2 runs
    none but has the longest queue, so llm-d's scores alone prefer worker 0 or 1."""
    return ClusterView([WorkerState(0, adapters={"a": 1}, max_loras=1, waiting=0),
                        WorkerState(1, adapters={"b": 2}, max_loras=1, waiting=0),
                        WorkerState(2, max_loras=1, waiting=5)], PrefixIndex(3))


def req(adapter: str | None) -> RouteRequest:
    return RouteRequest(np.arange(100, dtype=np.int64), adapter=adapter)


def test_affinity_then_room_then_everyone() -> None:
    always, never = LlmDLora(seed=1, threshold=1.0), LlmDLora(seed=1, threshold=0.0)
    assert always.route(req("a"), view()).worker == 0  # its adapter is there
    assert never.route(req("a"), view()).worker == 2  # the available group instead
    assert always.route(req("c"), view()).worker == 2  # no affinity: a free slot
    full = view()
    full.workers[2].adapters["d"] = 1  # every slot taken, c nowhere: every worker
    assert always.group("c", full).tolist() == [0, 1, 2]
    assert always.route(req(None), view()).worker in (0, 1)  # base model: llm-d alone


def test_the_threshold_is_a_seeded_draw() -> None:
    p = LlmDLora(seed=3)
    picks = [p.route(req("a"), view()).worker for _ in range(3000)]
    assert picks.count(2) == pytest.approx(3, abs=6)  # about 0.1% to the available group
    again = LlmDLora(seed=3)
    assert [again.route(req("a"), view()).worker for _ in range(3000)] == picks


def test_only_allowed_workers_are_grouped() -> None:
    v = view()
    v.allow([False, True, True])
    assert LlmDLora(seed=1, threshold=1.0).group("a", v).tolist() == [2]
    with pytest.raises(ValueError, match="threshold"):
        LlmDLora(threshold=1.5)
