"""The live router's admin API: list, add and remove workers.

Contract:

* Routes: ``GET /workers`` lists the workers (URL, health, breaker, the router's counts
  and the engine-reported load); ``POST /workers`` and SGLang's ``POST /add_worker`` add
  one; ``DELETE /workers`` and ``POST /remove_worker`` remove one. The worker is given as
  ``?url=`` or a JSON body ``{"url": ...}``. Add and remove answer with the new list.
  Adding may name the worker's KV-event feed, ``kv_events=ENDPOINT[,REPLAY]`` (query or
  JSON field; the router needs a tokenizer); the list then shows each feed's state.
* With an API key set, every admin request needs ``Authorization: Bearer KEY`` (401
  otherwise, compared in constant time).
* Errors are JSON: 400 for a missing or malformed URL, 409 when adding a member, 404 when
  removing a non-member.
* Adding and removing go through :class:`~kvroute.server.membership.Membership`, which
  keeps the router's workers in step. Removing a worker closes its open dispatches as
  failed; each gets a decision-log outcome line with error ``worker_removed`` (the HTTP
  requests still going to it carry on), and its per-worker metrics are dropped.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from typing import Any

from kvroute.errors import ConfigError
from kvroute.routing.router import Router
from kvroute.server.decision_log import DecisionLog
from kvroute.server.http_messages import Request, Response, error_response, json_response
from kvroute.server.kv_events import KvEventFeeds, parse_feed
from kvroute.server.membership import Membership
from kvroute.server.router_metrics import RouterMetrics

__all__ = ["Admin"]

log = logging.getLogger("kvroute.server")


class _NoUrl(Exception):
    """The admin request names no usable worker URL (400)."""


class Admin:
    def __init__(self, router: Router, members: Membership, metrics: RouterMetrics,
                 decisions: DecisionLog, clock: Callable[[], float], *, api_key: str | None,
                 policy_name: str, kv_events: KvEventFeeds | None = None) -> None:
        self.router = router
        self.members = members
        self.metrics = metrics
        self.decisions = decisions
        self.clock = clock
        self.api_key = api_key
        self.policy_name = policy_name
        self.kv_events = kv_events

    def _authorized(self, request: Request) -> bool:
        key = self.api_key
        if not key:
            return True
        got = request.headers.get("Authorization", "")
        return got.startswith("Bearer ") and hmac.compare_digest(got[7:].strip().encode(),
                                                                 key.encode())

    def workers_json(self) -> list[dict[str, Any]]:
        now = self.clock()
        m = self.members
        out: list[dict[str, Any]] = [
            {"url": w.url, "healthy": w.healthy, "available": a,
             "circuit_open": now < w.open_until, "in_flight": s.in_flight,
             "routed": s.routed, "completed": s.completed, "errors": s.errors,
             "engine": {"running": s.running, "waiting": s.waiting,
                        "kv_usage": round(s.kv_usage, 4), "kv_capacity": s.kv_capacity,
                        "max_running": s.max_running}}
            for w, a, s in zip(m.workers, m.available(now), self.router.workers, strict=True)]
        if self.kv_events is not None:
            for item in out:
                item["kv_events"] = self.kv_events.status(item["url"])
        return out

    @staticmethod
    def _field(request: Request, name: str) -> str | None:
        value = request.query.get(name)
        if value is None and request.body:
            try:
                body = request.json()
            except (ValueError, UnicodeDecodeError) as e:
                raise _NoUrl("the request body is not valid JSON") from e
            if isinstance(body, dict) and isinstance(body.get(name), str):
                value = body[name]
        return value

    def _url(self, request: Request) -> str:
        url = self._field(request, "url")
        if not url:
            raise _NoUrl("give the worker as ?url= or a JSON body {\"url\": ...}")
        return url

    async def workers(self, request: Request) -> Response:
        """Every admin route (see the module doc)."""
        if not self._authorized(request):
            self.metrics.errors.labels("unauthorized").inc()
            return error_response(401, "missing or wrong API key", "unauthorized",
                                  headers={"WWW-Authenticate": "Bearer"})
        if request.method == "GET":
            return json_response({"policy": self.policy_name, "workers": self.workers_json()})
        adding = request.method == "POST" and request.path != "/remove_worker"
        try:
            url = self._url(request)
            if adding:
                spec = parse_feed(self._field(request, "kv_events"))
                if spec is not None and self.kv_events is None:
                    raise ConfigError("kv_events needs a router started with --tokenizer "
                                      "(events carry token ids)")
                w = self.members.add(url)
                if spec is not None and self.kv_events is not None:
                    try:
                        self.kv_events.add(w.url, spec)
                    except ConfigError:
                        self.members.remove(w.url, self.clock())
                        raise
                log.info("added worker %s", w.url)
                return json_response({"added": w.url, "workers": self.workers_json()})
            now = self.clock()
            w, closed = self.members.remove(url, now)
            if self.kv_events is not None:
                self.kv_events.remove(w.url)
            for d in closed:
                self.decisions.outcome(now, d, w.url, ok=False, error="worker_removed")
            self.metrics.forget_worker(w.url)
            log.info("removed worker %s", w.url)
            return json_response({"removed": w.url, "workers": self.workers_json()})
        except _NoUrl as e:
            return error_response(400, str(e), "invalid_request_error")
        except ConfigError as e:
            status = 409 if "already" in str(e) else 404 if "not a member" in str(e) else 400
            return error_response(status, str(e), "invalid_request_error")
