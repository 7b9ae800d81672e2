"""An emulated engine behind a Ray Serve deployment (``kvroute[ray]``): the emulated
worker's :class:`~kvroute.sim.worker.SimWorker` on the replica's event loop.

Contract:

* :class:`EmulatedReplica` is a plain class; make it a deployment with
  ``serve.deployment(EmulatedReplica, ...)`` or :func:`emulated_deployment`. Its
  constructor takes :class:`~kvroute.worker.emulated.EmulatedConfig`'s fields; a replica
  is one engine (``dp_size`` other than 1 is a ConfigError: Serve's replicas are the
  data parallelism).
* Calling it (``handle.remote(ServePrompt(...))``, or an OpenAI-style body dict) serves
  one prompt: text through the worker's tokenizer, token ids as given, as
  :mod:`kvroute.protocol.request_body` reads them. The answer is a dict: ``replica``
  (Serve's replica id), ``prompt_tokens``, ``cached_tokens``, ``ttft_s`` and ``e2e_s``
  (on the replica, from reaching its engine). A prompt it can never serve is a
  :class:`~kvroute.protocol.request_body.BadRequest`.
* ``record_routing_stats()`` is Serve's routing-stats hook: the engine's running and
  queued requests, KV usage, pool size and cap on running requests
  (:func:`~kvroute.integrations.ray_serve.load_stats`),
  which :class:`~kvroute.integrations.ray_serve.KvrouteRequestRouter` reports to its Router.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kvroute.errors import ConfigError
from kvroute.integrations._ray import require_ray
from kvroute.protocol.request_body import BadRequest, max_tokens_of
from kvroute.worker.emulated import EmulatedConfig, EmulatedWorker

require_ray()

from ray import serve  # noqa: E402

from kvroute.integrations.ray_router import load_stats, request_body  # noqa: E402

__all__ = ["EmulatedReplica", "ServePrompt", "emulated_deployment"]


@dataclass(frozen=True)
class ServePrompt:
    """A completion request passed through a deployment handle: a ``prompt`` (text or
    token ids) and ``max_tokens``. Ray's ``PrefixCacheAffinityRouter`` reads the same
    ``prompt`` attribute."""

    prompt: str | list[int]
    max_tokens: int = 16


class EmulatedReplica:
    """One emulated engine (see the module doc)."""

    def __init__(self, **config: Any) -> None:
        cfg = EmulatedConfig(**config)
        if cfg.dp_size != 1:
            raise ConfigError(f"an emulated Serve replica is one engine, got dp_size "
                              f"{cfg.dp_size}: scale with the deployment's num_replicas")
        self.engine = EmulatedWorker(cfg)

    def _started(self) -> EmulatedWorker:
        if not self.engine.started:
            self.engine.start()  # on the replica's running event loop
        return self.engine

    async def __call__(self, request: Any) -> dict[str, Any]:
        engine = self._started()
        found = request_body((request,), {})
        if found is None:
            raise BadRequest("the request carries no prompt")
        route, body = found
        ids = engine.prompts.units(route, body)
        max_tokens = max_tokens_of(route, body) or engine.config.default_max_tokens
        (pending,) = engine.submit([ids], max_tokens)
        finish = await pending.done
        job = pending.job
        return {"replica": serve.get_replica_context().replica_id.unique_id,
                "prompt_tokens": int(job.req.prompt_len), "cached_tokens": int(job.cached),
                "ttft_s": job.first_token - job.queued, "e2e_s": finish - pending.t0}

    def record_routing_stats(self) -> dict[str, Any]:
        engine = self.engine
        return load_stats(engine.running, engine.waiting, engine.kv_usage(), engine.capacity,
                          engine.worker_config.max_running or 0)


def emulated_deployment(num_replicas: int, router_class: Any = None,
                        router_kwargs: dict[str, Any] | None = None, *,
                        stats_period_s: float = 0.5, max_ongoing_requests: int = 64,
                        name: str = "EmulatedReplica") -> Any:
    """``EmulatedReplica`` as a Serve deployment of ``num_replicas`` behind ``router_class``
    (a RequestRouter class or its import path; None: Serve's default) built with
    ``router_kwargs``, the replicas' routing stats refreshed every ``stats_period_s``."""
    from ray.serve.config import RequestRouterConfig

    fields: dict[str, Any] = {"request_routing_stats_period_s": stats_period_s,
                              "request_router_kwargs": router_kwargs or {}}
    if router_class is not None:
        fields["request_router_class"] = router_class
    return serve.deployment(EmulatedReplica, name=name, num_replicas=num_replicas,
                            max_ongoing_requests=max_ongoing_requests,
                            request_router_config=RequestRouterConfig(**fields))
