"""``vllm_dp``: vLLM's own data-parallel balancer, what ``vllm serve --data-parallel-size
N`` does with its ranks when no router chooses them: the baseline for routing to the
ranks of one engine (``URL@R`` workers, docs/live.md).

Algorithm (vLLM v1's ``DPLBAsyncMPClient.get_core_engine_for_request``): each engine's
score is ``4 * waiting + running``, from the counts the engines last published through
the data-parallel coordinator; the request goes to the least score, ties to the first in
order from the API server's start index (rank 0 with one API server); the chosen engine
then counts one more waiting request until the next published counts. The coordinator
publishes every 100 ms while the counts change, else after 5 s. The prompt is ignored:
the balancer does not see the caches.

Here the counts are the engine-reported ``WorkerState.waiting`` and ``running`` (the
simulator reports them at every engine step, the live router scrapes them), taken as a
new snapshot of a worker, which clears what was sent there, when they differ from the
last snapshot and it is at least ``publish_s`` (0.1 s) old, or when it is ``idle_s``
(5 s) old: the coordinator's timing.

:func:`score` is the rule itself; the emulated engine's own balancer
(:mod:`kvroute.worker.data_parallel`) uses it on its ranks' exact counts.

Parameters: ``seed`` (default 0; unused, the rule is deterministic), ``publish_s`` (0.1),
``idle_s`` (5.0).
"""

from __future__ import annotations

import math

from kvroute.params import number
from kvroute.routing.base import ClusterView, Decision, RouteRequest, RoutingPolicy
from kvroute.routing.registry import register

__all__ = ["VllmDP", "score"]

WAITING_WEIGHT = 4  # vLLM's score: a waiting request counts four running ones


def score(running: int, waiting: int) -> int:
    """vLLM's load score of an engine: the least is chosen."""
    return WAITING_WEIGHT * waiting + running


@register
class VllmDP(RoutingPolicy):
    name = "vllm_dp"

    def __init__(self, seed: int = 0, publish_s: float = 0.1, idle_s: float = 5.0) -> None:
        super().__init__(seed)
        self.publish_s = number("vllm_dp", "publish_s", publish_s, low=0.0)
        self.idle_s = number("vllm_dp", "idle_s", idle_s, low=0.0)
        self._seen: list[tuple[int, int]] = []  # each worker's last snapshot of counts
        self._at: list[float] = []  # when it was taken
        self._sent: list[int] = []  # requests sent to it since

    def on_workers_changed(self, count: int) -> None:
        del self._seen[count:], self._at[count:], self._sent[count:]

    def on_worker_removed(self, index: int, count: int) -> None:
        if index < len(self._seen):
            del self._seen[index], self._at[index], self._sent[index]
        self.on_workers_changed(count)

    def route(self, req: RouteRequest, view: ClusterView) -> Decision:
        workers, now = view.workers, view.now
        while len(self._seen) < len(workers):
            self._seen.append((-1, -1))
            self._at.append(-math.inf)
            self._sent.append(0)
        best, choice = -1, -1
        for w in view.candidates().tolist():
            ws = workers[w]
            counts = (ws.running, ws.waiting)
            age = now - self._at[w]
            if age >= self.idle_s or (age >= self.publish_s and counts != self._seen[w]):
                self._seen[w], self._at[w], self._sent[w] = counts, now, 0  # published
            running, waiting = self._seen[w]
            value = score(running, waiting + self._sent[w])
            if choice < 0 or value < best:
                best, choice = value, w
        self._sent[choice] += 1
        return Decision(choice, branch="least_score")
