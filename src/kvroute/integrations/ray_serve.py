"""A Ray Serve request router that runs any kvroute routing policy (``kvroute[ray]``).

Configure a deployment with::

    RequestRouterConfig(request_router_class=KvrouteRequestRouter,
                        request_router_kwargs={"policy": "cache_aware", "policy_args": {...}})

Contract:

* One :class:`~kvroute.routing.router.Router` per Serve router (each deployment handle,
  each HTTP proxy has its own): the policy, its prefix index and the in-flight accounting
  the simulator and ``kvroute serve`` use. ``request_router_kwargs``: ``policy`` (a
  routing-policy name; one that ``needs_probes`` is refused), ``policy_args`` (its
  parameters, checked by the registry), ``seed``, ``tokenizer`` (a ``tokenizer.json``;
  None: route on characters, as Ray's ``PrefixCacheAffinityRouter`` does) and
  ``index_capacity``. A bad value is a ConfigError when the router is built.
* Membership: the replicas of ``update_replicas`` are the Router's workers, in the order
  they joined; a replica that leaves or dies (``on_replica_actor_died``) is
  ``Router.remove_worker``-ed (its open dispatches close as failed, once), a new one is
  ``Router.add_worker``-ed with an empty cache.
* Engine load: each replica's ``routing_stats`` (what the deployment's
  ``record_routing_stats()`` returns: :data:`LOAD_KEYS`, see :func:`load_stats`) are
  reported with ``Router.report_load`` whenever Serve hands over new replica info.
* Routing: ``choose_replicas`` finds the prompt in the request's arguments
  (:func:`request_body`), asks the Router among the candidates and answers one rank with
  the one chosen replica. A request without a prompt (another method, a health call) is
  not the policy's: every candidate in one rank, Serve picks, nothing is counted.
* Accounting, exactly once per dispatch: a dispatch the replica accepted
  (``on_request_routed``) closes when its result is done (ok unless the result is an
  error); one the replica did not take (queue full, rejected, the caller cancelled)
  closes as failed and undelivered when Serve asks again for the same request (that
  replica is then left out for it, unless nothing else is left), when its caller gives
  up, or when Serve reported it done and neither accepted it nor asked again within 5 s
  (a fast replica's request can be reported done just before it is reported accepted);
  one on a replica that leaves closes as failed with it. This needs Serve's
  rejection protocol, on by default (off through Ray Client, which is not supported).
"""

from __future__ import annotations

from kvroute.integrations._ray import require_ray

require_ray()

from kvroute.integrations.ray_router import (  # noqa: E402 - after the friendly check
    LOAD_KEYS,
    KvrouteRouting,
    load_stats,
    request_body,
    routers,
)

__all__ = ["LOAD_KEYS", "KvrouteRequestRouter", "load_stats", "request_body", "routers"]


class KvrouteRequestRouter(KvrouteRouting):
    """Routes a deployment's requests with a kvroute policy (see the module doc)."""
