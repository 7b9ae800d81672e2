"""``oracle``: a reference, not a product policy. It sees each worker's true cache and
queue (``view.probes``, which only the simulator provides) and sends the request to the
allowed worker with the least predicted end-to-end time (ties: lowest index). It shows
how much a router could gain from perfect knowledge of the workers' state; its own
predictor is approximate (see ``SimWorker.predict_e2e``), so it is a strong baseline, not
an optimum.
"""

from __future__ import annotations

from kvroute.errors import ConfigError
from kvroute.routing.base import ClusterView, Decision, RouteRequest, RoutingPolicy
from kvroute.routing.registry import register

__all__ = ["Oracle"]


@register
class Oracle(RoutingPolicy):
    name = "oracle"
    needs_probes = True
    describe_needs = "needs the simulator's probes of each worker's true state"

    def route(self, req: RouteRequest, view: ClusterView) -> Decision:
        if view.probes is None:
            raise ConfigError("the oracle policy needs the workers' true state, which only the "
                              "simulator has; use it in kvroute sim / compare")
        out = req.max_tokens or 1
        probes = view.probes
        times = {w: probes[w].predict_e2e(req.units, out) for w in view.candidates().tolist()}
        best = min(times, key=times.__getitem__)
        return Decision(best, branch="min_true_e2e", predicted_s=times[best])
