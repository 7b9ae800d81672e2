"""``vllm_dp``: vLLM's own data-parallel balancer, what ``vllm serve --data-parallel-size
N`` does with its ranks when no router chooses them: the baseline for routing to the
ranks of one engine (``URL@R`` workers, docs/live.md).

Algorithm (vLLM v1's ``DPLBAsyncMPClient.get_core_engine_for_request``): each engine's
score is ``4 * waiting + running``, from the counts the engines last published (every
100 ms, through the data-parallel coordinator); the request goes to the least score,
ties to the first in order from the API server's start index (rank 0 with one API
server); the chosen engine then counts one more waiting request until the next
published counts. The prompt is ignored: the balancer does not see the caches.

Here the counts are the engine-reported ``WorkerState.waiting`` and ``running`` (the
simulator reports them at every engine step, the live router scrapes them), and a
request sent to a worker counts as waiting there until that worker's reported counts
change (a new report that happens to repeat the same counts is not told apart).

Parameters: ``seed`` (default 0; unused, the rule is deterministic).
"""

from __future__ import annotations

from kvroute.routing.base import ClusterView, Decision, RouteRequest, RoutingPolicy
from kvroute.routing.registry import register

__all__ = ["VllmDP"]

WAITING_WEIGHT = 4  # vLLM's score: a waiting request counts four running ones


@register
class VllmDP(RoutingPolicy):
    name = "vllm_dp"

    def __init__(self, seed: int = 0) -> None:
        super().__init__(seed)
        self._seen: list[tuple[int, int]] = []  # each worker's counts when last read
        self._sent: list[int] = []  # requests sent to it since its counts last changed

    def on_workers_changed(self, count: int) -> None:
        del self._seen[count:], self._sent[count:]

    def on_worker_removed(self, index: int, count: int) -> None:
        if index < len(self._seen):
            del self._seen[index], self._sent[index]
        self.on_workers_changed(count)

    def route(self, req: RouteRequest, view: ClusterView) -> Decision:
        workers = view.workers
        while len(self._seen) < len(workers):
            self._seen.append((-1, -1))
            self._sent.append(0)
        best, choice = -1, -1
        for w in view.candidates().tolist():
            ws = workers[w]
            counts = (ws.running, ws.waiting)
            if self._seen[w] != counts:  # new counts: what was sent is in them
                self._seen[w], self._sent[w] = counts, 0
            score = WAITING_WEIGHT * (ws.waiting + self._sent[w]) + ws.running
            if choice < 0 or score < best:
                best, choice = score, w
        self._sent[choice] += 1
        return Decision(choice, branch="least_score")
