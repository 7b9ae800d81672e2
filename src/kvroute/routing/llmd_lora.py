"""``llmd_lora``: llm-d's default profile (``llmd``) behind the LoRA affinity filter of the
Gateway API Inference Extension's scheduler, which llm-d's configuration can put in front
of its scorers (``lora-affinity-filter``).

For a request for a LoRA adapter (``RouteRequest.adapter``), among the allowed workers:

* the *affinity* group: the workers with a request for that adapter open (the router's
  count, ``WorkerState.adapters``; the filter reads the engine's running and waiting
  adapters);
* the *available* group: the others with fewer adapters open than the engine's cap
  (``WorkerState.max_loras``; a worker that reports none counts as available);
* if both groups have workers, the affinity group with probability ``threshold``
  (0.999, the filter's default; drawn from the policy's seeded generator), else the
  available one; if one is empty, the other; if both are, every allowed worker.

``llmd``'s scores then pick among them (the queue score normalised over the group, as a
scorer after a filter sees only what passed it). A base-model request goes to ``llmd``
as it is.
"""

from __future__ import annotations

import numpy as np

from kvroute.params import number
from kvroute.routing.base import ClusterView, Decision, RouteRequest
from kvroute.routing.llmd import LlmD
from kvroute.routing.registry import register

__all__ = ["LlmDLora"]


@register
class LlmDLora(LlmD):
    name = "llmd_lora"

    def __init__(self, seed: int = 0, *, queue_weight: float = 2.0, kv_weight: float = 2.0,
                 prefix_weight: float = 3.0, block: int = 16,
                 threshold: float = 0.999) -> None:
        super().__init__(seed, queue_weight=queue_weight, kv_weight=kv_weight,
                         prefix_weight=prefix_weight, block=block)
        self.threshold = number("llmd_lora", "threshold", threshold, low=0.0, high=1.0)

    def group(self, adapter: str, view: ClusterView) -> np.ndarray:
        """The workers the filter lets through for a request for ``adapter``."""
        allowed = view.candidates()
        ws = view.workers
        hot = [w for w in allowed.tolist() if adapter in ws[w].adapters]
        room = [w for w in allowed.tolist() if adapter not in ws[w].adapters
                and (not ws[w].max_loras or len(ws[w].adapters) < ws[w].max_loras)]
        if hot and room:
            chosen = hot if self.rng.random() < self.threshold else room
        else:
            chosen = hot or room
        return np.array(chosen, dtype=np.int64) if chosen else allowed

    def route(self, req: RouteRequest, view: ClusterView) -> Decision:
        if req.adapter is None:
            return super().route(req, view)
        return self.pick(req, view, self.group(req.adapter, view))
