"""Requests sent whole to one worker the router does not choose by its policy: no routing
decision, no accounting, the answer read whole and returned.

Contract:

* ``least_busy(request)``: the engines' endpoints that are not generation
  (:data:`PASSTHROUGH`: embeddings, tokenize, rerank, score, ...) go as received to the
  available worker with the fewest requests in flight, the next one if it cannot be
  reached (up to ``max_retries`` more); 503 when none is available or reachable.
* ``models(request)``: ``GET /v1/models`` from the first available worker that answers
  below 500 (one that cannot be reached is skipped); 503 when none does.
* ``to_owner(request)``: ``GET`` / ``DELETE /v1/responses/{id}`` and the ``POST``s under
  it (``/cancel``) go to the worker that stored ``id`` (the
  :class:`~kvroute.server.response_owners.ResponseOwners` the forwarder of
  :mod:`kvroute.server.proxy` fills); 404 for an id the router did not record, 503 while
  its worker is unavailable, 502 if it cannot be reached.
* A request goes with its method, path, query string, body and end-to-end headers (a
  data-parallel rank's header replaced by the worker's own, :mod:`kvroute.server.membership`);
  the answer comes back with its status, ``Content-Type`` and ``X-Kvroute-Worker``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from kvroute.protocol.response_body import WORKER_HEADER
from kvroute.routing.router import Router
from kvroute.server.http_messages import Request, Response, error_response
from kvroute.server.membership import Membership, Worker
from kvroute.server.proxy import end_to_end_headers
from kvroute.server.response_owners import ResponseOwners
from kvroute.server.router_metrics import RouterMetrics
from kvroute.server.upstream import Upstream, UpstreamError

__all__ = ["PASSTHROUGH", "Passthrough"]

# engine endpoints that are not generation (vLLM's and SGLang's)
PASSTHROUGH = ("/v1/embeddings", "/tokenize", "/detokenize", "/v1/rerank", "/rerank",
               "/v2/rerank", "/v1/score", "/score", "/pooling", "/classify",
               "/v1/audio/transcriptions", "/v1/audio/translations")

log = logging.getLogger("kvroute.server")


class Passthrough:
    def __init__(self, router: Router, members: Membership, upstream: Upstream,
                 metrics: RouterMetrics, owners: ResponseOwners, clock: Callable[[], float],
                 fail: Callable[[Worker, str], None], max_retries: int) -> None:
        self.router, self.members, self.upstream = router, members, upstream
        self.metrics, self.owners, self.clock = metrics, owners, clock
        self.fail = fail  # a failure towards the worker's circuit breaker
        self.max_retries = max_retries

    async def least_busy(self, request: Request) -> Response:
        """An engine endpoint that is not generation (see the module doc)."""
        self.metrics.requests.labels("passthrough").inc()
        allowed = self.members.allowed(self.clock())
        order = sorted(np.flatnonzero(allowed).tolist(),
                       key=lambda i: self.router.workers[i].in_flight)
        for i in order[:self.max_retries + 1]:
            w = self.members.workers[i]
            try:
                return await self._send(request, w)
            except UpstreamError as e:
                self.fail(w, "upstream_connect")
                log.warning("passthrough %s to %s failed: %s", request.path, w.url, e)
        self.metrics.errors.labels("no_worker").inc()
        return error_response(503, "no healthy worker is available", "service_unavailable")

    async def models(self, request: Request) -> Response:
        """``GET /v1/models`` (see the module doc)."""
        self.metrics.requests.labels("models").inc()
        now = self.clock()
        for w, a in zip(list(self.members.workers), self.members.available(now), strict=True):
            if not a:
                continue
            try:
                r = await self._send(request, w)
            except UpstreamError:
                continue
            if r.status < 500:
                return r
        self.metrics.errors.labels("no_worker").inc()
        return error_response(503, "no healthy worker is available", "service_unavailable")

    async def to_owner(self, request: Request) -> Response:
        """A request under ``/v1/responses/{id}`` to the worker that stored ``id``."""
        rid = request.path.split("/")[3]
        self.metrics.requests.labels("responses_stored").inc()
        url = self.owners.owner(rid)
        i = None if url is None else self.members.find(url)
        if url is None or i is None:
            return error_response(404, f"response {rid!r} was not made through this router "
                                       "(or it was forgotten)", "not_found_error")
        w = self.members.workers[i]
        if not self.members.available(self.clock())[i]:
            self.metrics.errors.labels("owner_unavailable").inc()
            return error_response(503, f"the worker that stored response {rid!r} ({url}) "
                                       "is not available", "service_unavailable")
        try:
            return await self._send(request, w)
        except UpstreamError as e:
            self.fail(w, "upstream_connect")
            return error_response(502, f"worker {w.url} failed: {e}", "upstream_error")

    async def _send(self, request: Request, w: Worker) -> Response:
        headers = end_to_end_headers(request, rank=False) + w.headers()
        path = request.path + (f"?{request.query_string}" if request.query_string else "")
        async with await self.upstream.request(request.method, w.base, path, request.body,
                                               headers) as r:
            data = await r.read()
            return Response(data, r.status, {
                "Content-Type": r.headers.get("Content-Type", "application/json"),
                WORKER_HEADER: w.url})
