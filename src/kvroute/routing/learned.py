"""``learned``: least marginal cost, with latency models learned online from feedback.

What it sees (never the simulator's probes): the router's prefix index (``view.matched(req)``,
replies included: ``records_replies``, docs/routing.md), its in-flight accounting
(``in_flight``, ``prefill_units``), the engines' reported load (``running``, ``waiting``,
``kv_capacity``, ``kv_usage``, ``max_running``), each request's first token
(``on_first_token``) and each completed request's TTFT, E2E and reported cached tokens.

``in_flight_w`` below is the router's own count of requests open on ``w``, or the
engine's reported ``running + waiting`` where that is more (other routers' requests too:
docs/routing-results.md, "Several routers"; a live scrape may be stale).

For a request of ``L`` prompt units and ``O`` output tokens (``max_tokens``, or expected:
"The output" below), and each allowed worker ``w``:

    h_w    = min(r_w * matched_w, L - 1)            expected cached units (r_w: hit
                                                    realisation at the prefix's age on w)
    u_w    = L - h_w                                units it must prefill
    pairs  = u_w * (h_w + u_w / 2)                  its attention pairs
    ahead  = (prefill_units_w - unstreamed_w) * f_w  uncached units queued before it,
             + pending_w                            where f_w = (sum of u over this
                                                    policy's open requests on w) / (sum
                                                    of L over them, :mod:`~kvroute.
                                                    routing.uncached_share`); unstreamed_w,
                                                    pending_w: the requests without a
                                                    first token ("Requests that do not
                                                    stream", below; 0 when all stream)
    TTFT_w = a . [(s_w * ahead + u_w) / 1000, pairs / 1e6, 1], or where it waits for room
             in w's KV pool or a slot ("Waits for admission", below) room_w + a .
             [u_w / 1000, pairs / 1e6, 1] if that is more
    ctx_w  = (prompt units in flight on w + L) / 1e5
    dec_w  = s_w * (O - 1) * d . [1, in_flight_w + 1, ctx_w]   its decode time (s_w: the
                                                    worker's slowness, below)
    work_w = a0 * u_w / 1000 + a1 * pairs / 1e6     seconds of prefill it adds to worker w
    lam_w  = in_flight_w + (in_flight_w + mean in-flight over the allowed workers) / 2
    copy_w = a0 * (max_v h_v - h_w) / 1000          seconds to recompute what another
                                                    allowed worker already holds
    excess_w = s_w inflow_w / mean_v(s_v inflow_v) - 1   uncached units sent to w
                                                    lately, per unit of its speed, over
                                                    the workers' mean (-1 .. n - 1)
    cost_w = (1 + ttft_weight) * TTFT_w + dec_w + lam_w * work_w
             + copy_weight * scarce * (1 + lam_w) * copy_w
             + balance_weight * excess_w * a0 * u_w / 1000
             + slot_w                            (LoRA adapters on capped engines only)
    scarce = 1 while every allowed worker has prefill queued (ahead > 0), else 1 - r_old

and the request goes to ``argmin cost`` (ties: the smallest prefix index, so new prefixes
spread over the cluster's caches; then the lowest index). ``TTFT_w + dec_w`` is the
request's own predicted latency as the decision weighs it; the latency it reports
(``Decision.predicted_s``, the error telemetry) takes its decode time from a calibrated
model instead (below, "The reported E2E"). The terms:

* ``lam_w * work_w`` is the delay its prefill adds to other requests: the engine runs
  prefill before decode, so every request in flight on ``w`` waits for it, those decoding
  now and those still prefilling alike (this one queues behind them, and they are
  decoding when its prefill runs), and later arrivals queue behind it: about the number
  in flight there, taken as the mean of the worker's own count and the cluster's (the
  cluster's alone undercounts a worker that a burst of one prefix group has filled, and
  keeps the burst there too long; the worker's alone spreads prefix groups over the
  cluster at high load). At low load ``lam`` is small and the rule is "least own
  latency" (what ``oracle`` does); at high load spared prefill (a prefix hit) is worth
  more than a shorter queue, and the rule keeps prefix groups together, except on a
  worker whose requests in flight would pay for it. With no hits anywhere (long prompts,
  little reuse) ``work_w`` is the same on every worker and the rule balances by
  predicted latency and load alone (counting only the requests decoding now doubled
  the stalls on GSP in round-robin order).
* ``ttft_weight`` extra copies of the predicted TTFT: what a waiting client sees; queued
  behind prefills, a request also delays the decode steps of its worker.
* The copy term prices the future hits a prefix group loses when one of its requests is
  sent away from the worker that holds the prefix: the copy takes cache space on ``w``
  that the eviction policy frees by dropping other prefixes, each of which a later
  request will miss (prefill plus the delay to others: ``1 + lam_w`` times its work).
  How scarce cache is comes from ``1 - r_old``: ``r_old`` is the hit realisation
  (below) of the oldest prefixes it has evidence on, the share of them the engines
  still held (1 while the caches hold everything, and while no engine reports cached
  tokens). Not the overall rate: most traffic reuses young prefixes, which are realised
  whatever the pressure. A burst of one group may spread while the caches keep
  everything; once they evict, a group stays on its worker unless the load says
  otherwise. Of several workers that hold a group's prefix, the one sent it last has
  the youngest copy, so the highest ``r_w`` (below) once older copies are seen to be
  evicted more often: the group consolidates there and the stale copies age out.
  While every allowed worker has prefill queued, a copy takes no spare capacity and is
  charged in full: a burst spreads only onto a worker with nothing queued.
* The balance term spreads new content over the caches where nothing else tells the
  workers apart. ``inflow_w`` sums the uncached units sent to ``w``, each request's
  weight decaying by ``forget`` per request routed (:mod:`~kvroute.routing.inflow`); a
  worker sent twice the mean pays ``balance_weight`` (1%) of the request's own prefill
  more, one sent nothing that much less (per unit of each worker's speed: a prefix
  brings its later requests with it). Too small to outweigh a real hit or a queue, it
  decides where every worker is idle and only a shared template differs, which would
  otherwise send every new prompt to the same workers (docs/routing-results.md, "Low
  load").

* Waits for admission (:mod:`~kvroute.routing.pool_room`, whose contract has the
  mechanism). An engine admits a request only when its KV pool has room for it and, where
  it caps its running requests (``WorkerState.max_running``: SGLang reports its
  ``--max-running-requests``; for vLLM's ``--max-num-seqs``, ``kvroute serve
  --max-running``), a slot is free. Each request decoding on ``w`` (from its first
  token) holds its need, ``L + O`` units less a prefix an open request there holds
  already, and its slot until its reported decode time has passed. ``room_w`` is the
  longer of the two waits, and the TTFT there is at least ``room_w + a . [u_w / 1000,
  pairs / 1e6, 1]``. The pool and the output are in router units by
  ``view.units_per_token`` (from the replies' prompt tokens; no room is claimed before
  the first such report, nor on engines that report no pool, and no cap is assumed:
  lower bounds). Without them the queue term reads a worker whose pool or slots long
  decodes hold as free (docs/routing-results.md, "Features of the public conversation
  trace", "Engines with a cap on running requests"). A request for a LoRA adapter
  likewise waits for an adapter slot where the engine caps them
  (``WorkerState.max_loras``) and they are all taken: until the first adapter there is
  expected to be done, its requests still coming (:mod:`~kvroute.routing.adapter_slots`:
  a busy period from their rate there and their predicted E2E, or, for an adapter that
  holds a slot on another worker where nothing waits, its open requests' latest due: it
  can drain); an adapter open on another worker finds a worker's last free slot taken
  (kept for adapters open nowhere), and a worker where it would queue for a slot is
  closed to it (cost infinite) while it is open elsewhere, unless every allowed worker is.
  ``slot_w`` prices the slot it holds there for the others, in seconds of their wait,
  like the stall term: the slot-seconds it adds (its predicted E2E where it opens a slot,
  else how much it extends its adapter's hold there) times the requests waiting there
  behind that slot plus the wait it costs the adapters arriving open nowhere (an Erlang
  loss model of their rate and holds; the module has the mechanism).

Learning (all from completions; errors teach nothing):

* ``a``, ``d``, the reported E2E and ``s`` (:mod:`~kvroute.routing.latency_models`,
  ``self.models``): recursive least squares on the features above, targets the observed
  TTFT and per-token decode time (``(E2E - TTFT) / (O - 1)``), clipped at >= 0 with the
  intercept refitted; a second decode fit, weighted by the output, only for the E2E the
  decision reports (``Decision.predicted_s`` and the error telemetry); each worker's
  slowness from the TTFT residuals of the requests that found nothing queued ahead, where
  the decode residuals agree (else 1, so ties between equal workers survive). When the
  engine reports the cached tokens, ``u`` and ``pairs`` are recomputed from them (what
  was really prefilled; in the router's units, ``Feedback.cached_units``) before the
  update. ``s_w`` multiplies the decode prediction and the wait for the prefill queued
  ahead, not the request's own prefill: that sends new prefix groups past idle slow
  workers and the cluster loses their caches (docs/routing-results.md, "Workers of
  different speeds").
* The output ``O``: expected from the outputs the engines reported
  (``Feedback.output_tokens``) for requests that began alike, or as ``max_tokens`` times
  the mean ratio of outputs to it (:mod:`~kvroute.routing.output_lengths`, whose contract
  has the rule). The decode model learns per token from the reported outputs. Before any
  report a request without ``max_tokens`` gets the mean observed decode time as
  ``dec_w`` (exponential average, weight ``1 - forget``), the same on every worker
  (docs/routing-results.md, "Clients that send no ``max_tokens``, or a cap").
* ``r`` (hit realisation, :mod:`~kvroute.routing.hit_realisation`, whose contract has the
  mechanism): engine-reported cached units over the index's ``matched`` at routing, by the
  age of the prefix (``r_w``: that of ``w``'s prefix; the index may believe in prefixes
  the worker has evicted, and the older the more). Without a cached-token report (engines
  send one only when asked: docs/routing.md), a request that found nothing queued ahead
  took its own prefill as its TTFT, so the TTFT model read backwards gives what was cached
  (``LatencyModels.learn``), and that is the realisation's sample; the TTFT model itself
  learns only from reported counts or its own predicted ``u`` (docs/routing-results.md,
  "Engines that report no cached tokens"). A request whose TTFT was predicted with a wait
  for room or a slot teaches neither.
* Requests that do not stream (``RouteRequest.streamed`` False; Ray Serve's hooks carry
  no first token either): no TTFT, and the router's accounting counts such a request as
  prefilling until it completes. So ``ahead`` counts instead its uncached units until
  its predicted first token is due (``pending_w``, :mod:`~kvroute.routing.pending_prefill`).
  Its completion teaches the models' E2E regression and, without a cached-token report,
  the realisation (the E2E less the predicted decode, read backwards as above); while no
  completion has had a TTFT, ``a`` and ``d`` are that regression's two halves
  (docs/routing-results.md, "Clients that do not stream").

Several routers (``replicas`` > 1): a prompt the index cannot place goes to the worker
every router picks, within a learned band of the best cost (:mod:`~kvroute.routing.home`,
docs/routing-results.md, "Several routers"); not needed with the engines' KV events.

Late binding (``holds``, :mod:`~kvroute.routing.decode_first`): while every allowed worker
has prefill queued and the requests decoding have less predicted decode time left than a
request's own prefill, it waits at the router and they finish first.

Parameters: ``forget`` 0.998 (forgetting factor of every estimate, in (0, 1]);
``prior_ktoken_s`` 0.1 (prior seconds per 1000 prefill units, replaced by the first few
hundred completions; the decision does not depend on its scale when costs are
prefill-bound); ``ttft_weight`` 3 and ``copy_weight`` 3 (>= 0; chosen on the design grid
of docs/routing-results.md, checked on seeds 4-6); ``balance_weight`` 0.01 (>= 0; a tie
breaker's scale, above); ``replicas`` 1 (the routers sharing the workers, above);
``late_binding`` True (above); ``ttft_scale`` 0 (>= 0): where decode dominates the rule
trades TTFT for mean E2E (docs/routing-results.md, "Long outputs", "Chat with longer
replies"), and s > 0 multiplies TTFT's weight by (mean E2E / mean TTFT) ** s over streamed
completions (:attr:`Learned.ttft_weight_now`; off by default: it costs mean E2E on the
design grid). No constant depends on a workload.

Telemetry (:meth:`telemetry`): the mean absolute and signed error of the predicted TTFT,
the reported E2E and the expected output (:mod:`~kvroute.routing.prediction_errors`), the
coefficients, how often a model's ``P`` was reset (``model_resets``: the regression's
guard for long runs), the hit realisation, each worker's slowness and inflow excess;
with ``replicas`` > 1, ``home_band`` and the homes taken (``home_sent``).
"""

from __future__ import annotations

import math

from kvroute.params import flag, integer, number
from kvroute.routing import decode_first
from kvroute.routing.adapter_slots import AdapterSlots
from kvroute.routing.base import ClusterView, Decision, Feedback, RouteRequest, RoutingPolicy
from kvroute.routing.hit_realisation import HitRealisation
from kvroute.routing.home import Home
from kvroute.routing.inflow import Inflow
from kvroute.routing.latency_models import LatencyModels
from kvroute.routing.learned_records import Costs, OpenRequest
from kvroute.routing.output_lengths import OutputLengths
from kvroute.routing.pending_prefill import PendingPrefill
from kvroute.routing.pool_room import PoolRoom
from kvroute.routing.prediction_errors import PredictionErrors
from kvroute.routing.registry import register
from kvroute.routing.ttft_form import ttft_features
from kvroute.routing.uncached_share import UncachedShare, queued_ahead

__all__ = ["Learned"]


@register
class Learned(RoutingPolicy):
    name = "learned"
    uses_index = True
    records_replies = True

    def __init__(self, seed: int = 0, *, forget: float = 0.998,
                 prior_ktoken_s: float = 0.1, ttft_weight: float = 3.0,
                 copy_weight: float = 3.0, ttft_scale: float = 0.0,
                 balance_weight: float = 0.01, replicas: int = 1,
                 late_binding: bool = True) -> None:
        super().__init__(seed)
        self.replicas = integer("learned", "replicas", replicas, low=1)
        self.late_binding = flag("learned", "late_binding", late_binding)
        self.ttft_weight, self.copy_weight, self.ttft_scale, self.balance_weight = (
            number("learned", name, value, low=0.0)
            for name, value in (("ttft_weight", ttft_weight), ("copy_weight", copy_weight),
                                ("ttft_scale", ttft_scale), ("balance_weight", balance_weight)))
        self.forget = number("learned", "forget", forget, low=0.0, high=1.0, low_open=True)
        k = number("learned", "prior_ktoken_s", prior_ktoken_s, low=0.0, low_open=True)
        self.models = LatencyModels(self.forget, k)  # a, d, the reported decode, s
        self.pending = PendingPrefill()  # not streamed: uncached units until first token
        self.outputs = OutputLengths(self.forget)  # O expected, from earlier completions
        self.realisation = HitRealisation(self.forget)
        self.share = UncachedShare()  # f_w over this policy's open requests
        self.inflow = Inflow(self.forget)  # the uncached units sent to each worker lately
        self.open: dict[int, OpenRequest] = {}
        self.room = PoolRoom()  # the requests open and decoding on each worker
        self.slots = AdapterSlots(self.forget)  # the LoRA adapters open on each worker
        self.home = Home(self.forget) if self.replicas > 1 else None  # several routers
        self.ttft_errors, self.e2e_errors = PredictionErrors(), PredictionErrors()
        self.output_errors = PredictionErrors("tokens")  # expected O against reported
        # observed TTFTs and E2Es of streamed requests, summed with forgetting (ttft_scale)
        self.ttft_sum = self.e2e_sum = 0.0

    # ------------------------------------------------------------------ membership
    def _ensure(self, n: int) -> None:
        self.share.ensure(n)
        self.inflow.ensure(n)
        self.pending.ensure(n)
        self.models.slow.ensure(n)

    def on_workers_changed(self, count: int) -> None:
        self._ensure(count)

    def on_worker_removed(self, index: int, count: int) -> None:
        self._ensure(index + 1)
        self.share.remove_worker(index)
        self.inflow.remove_worker(index)
        self.pending.remove_worker(index)
        self.models.slow.remove(index)
        self.room.remove_worker(index)
        self.slots.remove_worker(index)
        for rec in self.open.values():
            if rec.worker > index:
                rec.worker -= 1
        self._ensure(count)

    # ------------------------------------------------------------------ the decision
    @property
    def hit_realisation(self) -> float:
        return self.realisation.overall

    @property
    def ttft_weight_now(self) -> float:
        """``ttft_weight``, times (mean E2E / mean TTFT) ** ``ttft_scale`` once a TTFT
        has been seen (the module doc)."""
        if self.ttft_scale and self.ttft_sum > 0:
            return float(self.ttft_weight * (self.e2e_sum / self.ttft_sum) ** self.ttft_scale)
        return self.ttft_weight

    def costs(self, req: RouteRequest, view: ClusterView) -> Costs:
        """Per worker, as in the module doc (plain Python: cheaper than numpy calls here)."""
        n = len(view)
        if n > len(self.share):
            self._ensure(n)
        length = float(len(req))
        last = view.last_sent(req).tolist()  # first: one walk of the index gives matched too
        matched = view.matched(req).tolist()
        self.pending.settle(view.now)
        models = self.models
        a0, a1, a2, d0, d1, d2 = models.coefficients()
        fingerprint = self.outputs.fingerprint(req.units)
        out = self.outputs.predict(fingerprint, req.max_tokens)
        # dec = o (d0 + d1 (flight + 1) + d2 ctx) when O is expected; the E2E regression
        # learned the decode seconds of requests of unknown output with o = 1
        by_output = out is not None or models.completions_only
        o = 1 if out is None else max(out - 1.0, 0.0)
        dec_flight, dec_ctx, dec_0 = o * d1, o * d2, o * (d0 + d1)
        k0 = a0 / 1000.0  # seconds per uncached unit
        k1 = a1 / 1e6
        rate, now = self.realisation.rate, view.now
        cap = length - 1.0
        hit = [0.0] * n
        age = [-1] * n  # read only where a prefix is matched
        holders = [w for w, m in enumerate(matched) if m]
        rates: dict[int, float] = {}  # each age bucket's rate read once
        for w, b in zip(holders, self.realisation.buckets([last[w] for w in holders], now),
                        strict=True):
            age[w] = b
            r = rates.get(b)
            if r is None:
                r = rates[b] = rate(b)
            h = r * matched[w]
            hit[w] = h if h <= cap else cap
        workers = view.workers
        allowed = view.candidates().tolist()
        # requests on each worker: this router's, or what its engine reports where that is
        # more (other routers' requests too: the module doc)
        seen = [ws.in_flight if ws.in_flight >= ws.running + ws.waiting
                else ws.running + ws.waiting for ws in workers]
        if len(allowed) == n:
            flights = sum(seen)
            top = max(hit)
        else:
            flights = sum(seen[w] for w in allowed)
            top = max(hit[w] for w in allowed)
        # lam = flight + (flight + mean in flight over the allowed) / 2
        lam_0 = flights / (2.0 * len(allowed))
        ahead = queued_ahead(workers, self.share, self.pending.units)
        # copies are charged in full while no allowed worker is idle (none has prefill queued)
        busy = min(ahead if len(allowed) == n else [ahead[w] for w in allowed]) > 0.0
        copy_k = self.copy_weight * (1.0 if busy else 1.0 - self.realisation.oldest()) * k0
        tw = self.ttft_weight_now
        slow = models.slow.factors(n)
        # excess_w = inflow_w * n / total - 1
        inflow, total = self.inflow.weighted(n, None if models.slow.alike else slow)
        bal_k = self.balance_weight * k0 if total > 0 else 0.0  # nothing sent: no excess
        total = total if total > 0 else 1.0
        cost, own, ttft, unc, ctx, room = [0.0] * n, [0.0] * n, [0.0] * n, [0.0] * n, \
            [0.0] * n, [0.0] * n
        decode_mean = models.decode_mean
        per_token, held, adapter = view.units_per_token, self.room.held, req.adapter
        hot, per_slot = (0, (0.0, 0.0)) if adapter is None else self.slots.cluster(adapter,
                                                                                   workers)
        closed: list[int] = []  # workers where the adapter would queue a second time
        # a worker that holds none of the prompt: its prefill and copy terms, computed once
        work_0 = length * k0 + length * (0.0 + length / 2.0) * k1
        copy_0 = (top if top > 0.0 else 0.0) * copy_k
        for w, (ws, h, s_w, ahead_w, inflow_w) in enumerate(
                zip(workers, hit, slow, ahead, inflow, strict=False)):
            if h:
                u = length - h
                work = u * k0 + u * (h + u / 2.0) * k1
                spared = top - h  # > 0 where another allowed worker holds more (no max())
                copy = (spared if spared > 0.0 else 0.0) * copy_k  # copy_w times its weight
            else:
                u, work, copy = length, work_0, copy_0
            unc[w] = u
            ttft_w = work + (s_w * ahead_w) * k0 + a2
            if per_token and ws.kv_capacity and held(w):  # room in its pool (the module doc)
                pool = ws.kv_capacity * per_token
                need = self.room.need(len(req), out, w, matched[w], last[w], per_token)
                if held(w) + need > pool:
                    admitted = self.room.wait(w, need, pool, ws.kv_usage * pool, now) + work + a2
                    if admitted > ttft_w:
                        room[w] = admitted - ttft_w
                        ttft_w = admitted
            flight = seen[w]
            slots = ws.max_running
            if slots and flight >= slots:  # it queues for a running slot (the module doc)
                admitted = self.room.slot_wait(w, flight - slots + 1, now) + work + a2
                if admitted > ttft_w:
                    room[w] += admitted - ttft_w
                    ttft_w = admitted
            if adapter is not None and ws.max_loras:  # and for an adapter slot
                admitted = self.slots.wait(w, adapter, ws.max_loras, now,
                                           hot - (adapter in ws.adapters) > 0) + work + a2
                if admitted > ttft_w:
                    room[w] += admitted - ttft_w
                    ttft_w = admitted
            ttft[w] = ttft_w
            ctx_w = ctx[w] = (ws.prefill_units + ws.decode_units + length) / 1e5
            dec = flight * dec_flight + ctx_w * dec_ctx + dec_0 if by_output else decode_mean
            own_w = own[w] = ttft_w + dec * s_w
            cost[w] = (own_w + ttft_w * tw + (flight * 1.5 + lam_0) * (work + copy) + copy
                       + bal_k * (inflow_w * n / total - 1.0) * u)
            if adapter is not None and ws.max_loras:  # the adapter slot it holds
                cost[w] += self.slots.price(w, adapter, now + own_w, now, per_slot,
                                            ws.max_loras)
                if self.slots.closed(w, adapter, ws.max_loras):
                    closed.append(w)
        if closed and not set(allowed) <= set(closed):  # it waits where it is open
            for w in closed:
                cost[w] = math.inf
        return Costs(cost, own, ttft, unc, ahead, room, ctx, seen, age, out, fingerprint)

    def holds(self, req: RouteRequest, view: ClusterView) -> bool:
        return self.late_binding and decode_first.holds(self, req, view)

    def route(self, req: RouteRequest, view: ClusterView) -> Decision:
        cost, own, ttft, unc, ahead, room, ctx, seen, age, out, fingerprint = self.costs(req, view)
        w = view.argmin(cost)
        if cost.count(cost[w]) > 1:  # tied: the smallest prefix index, then the lowest index
            sizes = view.index_sizes()
            w = min((v for v in view.candidates().tolist() if cost[v] == cost[w]),
                    key=lambda v: sizes[v])
        sent_home = -1.0
        if self.home is not None:  # several routers: a prompt none can place goes home
            w, sent_home = self.home.choose(req.units, view.matched(req).tolist(), view.allowed,
                                            view.candidates().tolist(), cost, w)
        u = unc[w]
        x_dec = (1.0, seen[w] + 1.0, ctx[w])
        pred_e2e = own[w]  # reported: with an output expected, from decode_report
        if out is not None and not self.models.completions_only:
            decode = max(out - 1.0, 0.0) * self.models.decode_report.predict(x_dec)
            pred_e2e = ttft[w] + self.models.slow.factors(len(view))[w] * decode
        self.open[req.rid] = OpenRequest(
            worker=w, units=len(req), uncached=u,
            matched=int(view.matched(req)[w]), age=age[w],
            x_ttft=ttft_features(ahead[w], u, len(req) - u), ahead=ahead[w],
            x_dec=x_dec, out=req.max_tokens, fingerprint=fingerprint, pred_out=out,
            pred_ttft=ttft[w], pred_e2e=pred_e2e, sent=view.now,
            need=self.room.need(len(req), out, w, float(view.matched(req)[w]),
                                float(view.last_sent(req)[w]), view.units_per_token)
            if view.units_per_token else 0.0, room=room[w], home_common=sent_home)
        self.room.sent(w, view.now)
        if req.adapter is not None:
            self.slots.sent(req.rid, w, req.adapter, view.now + own[w], view.now)
        if not req.streamed:
            self.pending.add(req.rid, w, u, view.now + ttft[w])
        self.share.add(w, u, len(req))
        self.inflow.add(w, u)
        return Decision(w, branch="min_marginal_cost", predicted_s=pred_e2e)

    # ------------------------------------------------------------------ learning
    def on_first_token(self, rid: int, worker: int, now: float) -> None:
        rec = self.open.get(rid)
        if rec is not None:  # decoding: it holds its need until its predicted decode ends
            self.room.started(rid, rec.worker, rec.need, now + rec.pred_e2e - rec.pred_ttft)

    def on_complete(self, fb: Feedback) -> None:
        rec = self.open.pop(fb.rid, None)
        if rec is None:
            return
        w = rec.worker
        self.pending.done(fb.rid)
        self.room.done(fb.rid)
        self.slots.done(fb.rid, fb.now)
        self.room.closed(w, rec.sent)
        self.share.remove(w, rec.uncached, rec.units)
        if not fb.ok or fb.e2e_s is None:
            return
        self.e2e_errors.add(rec.pred_e2e, fb.e2e_s)
        out = rec.out  # the output tokens it generated, else max_tokens (or None)
        if fb.output_tokens is not None:
            if rec.pred_out is not None:
                self.output_errors.add(rec.pred_out, fb.output_tokens)
            self.outputs.update(rec.fingerprint, rec.out, fb.output_tokens)
            out = fb.output_tokens
        cached: float | None = fb.cached_units
        x = rec.x_ttft
        if cached is not None:  # learn from what was really computed
            hit = float(min(cached, rec.units - 1))
            x = ttft_features(rec.ahead, rec.units - hit, hit)
        if fb.ttft_s is not None:
            self.ttft_errors.add(rec.pred_ttft, fb.ttft_s)
            self.ttft_sum = self.forget * self.ttft_sum + fb.ttft_s
            self.e2e_sum = self.forget * self.e2e_sum + fb.e2e_s
        read = self.models.learn(w, x, rec.x_dec, out, fb.ttft_s, fb.e2e_s, units=rec.units,
                                 unknown_hit=cached is None and rec.matched > 0,
                                 alone=rec.ahead == 0, waited=bool(rec.room))
        if cached is None:
            cached = read
        if cached is not None and rec.matched > 0:
            self.realisation.update(rec.age, cached, rec.matched)
        if self.home is not None and rec.home_common >= 0 and fb.cached_units is not None:
            self.home.learn(rec.units, rec.home_common, fb.cached_units)

    def telemetry(self) -> dict[str, object]:
        """Predicted against observed TTFT and E2E, and the learned coefficients."""
        return {"ttft": self.ttft_errors.report(), "e2e": self.e2e_errors.report(),
                "output": self.output_errors.report(), **self.models.telemetry(),
                "ttft_weight": self.ttft_weight_now,
                "hit_realisation": self.hit_realisation,
                "hit_realisation_by_age": self.realisation.by_age(),
                "worker_slowness": _by_worker(self.models.slow.factors(len(self.share))),
                "inflow_excess": _by_worker(self.inflow.excess(
                    len(self.share), self.models.slow.factors(len(self.share)))),
                **({} if self.home is None else {"home_band": self.home.band,
                                                 "home_sent": self.home.sent})}


def _by_worker(values: list[float]) -> dict[str, float]:
    return {str(i): float(v) for i, v in enumerate(values)}
