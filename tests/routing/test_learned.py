"""The ``learned`` policy: hand-computed costs from its priors, online learning, telemetry."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from kvroute.errors import ConfigError
from kvroute.routing.base import ClusterView, Decision, Feedback, RouteRequest, WorkerState
from kvroute.routing.learned import Learned
from kvroute.routing.online_regression import OnlineRegression
from kvroute.routing.prefix_index import PrefixIndex
from kvroute.routing.registry import make_router_policy
from kvroute.routing.router import Router
from kvroute.routing.ttft_form import cached_from_ttft
from tests.routing.views import view_of

# Priors with prior_ktoken_s = 0.1: TTFT a = [0.1 s/1000 units, 0.005 s/1e6 pairs, 0.01 s],
# decode d = [0.02 s/token, 0.001 s/token per request in flight].


def _req(n: int, out: int = 4) -> RouteRequest:
    return RouteRequest(np.arange(n, dtype=np.int64), rid=7, max_tokens=out)


def test_idle_cluster_takes_the_prefix_hit() -> None:
    """2000 units, worker 0 holds 1000: TTFT 0.1175 vs 0.22, decode 0.063 each, lam 0; no
    hit realisation learned yet (r = 1), so a copy costs nothing: cost = own + 3 TTFT."""
    view = view_of([WorkerState(0), WorkerState(1)], {0: 1000})
    policy = Learned()
    cost, own, ttft, unc, *_ = policy.costs(_req(2000), view)
    assert ttft == pytest.approx([0.1175, 0.22])
    assert own == pytest.approx([0.1805, 0.283])
    assert cost == pytest.approx([0.533, 0.943])  # nothing in flight: lam = 0
    assert unc == pytest.approx([1000, 2000])
    d = policy.route(_req(2000), view)
    assert (d.worker, d.branch, d.predicted_s) == (0, "min_marginal_cost",
                                                   pytest.approx(0.1805))


def test_a_long_queue_outweighs_the_hit_at_light_load() -> None:
    """Worker 0 (the hit) has 3 in flight, 6000 units to prefill: own 0.7895 + 3 * TTFT
    0.7175 + (3 + (3 + 1.5) / 2) * 0.1075 = 3.506375 against worker 1's 0.283 + 3 * 0.22 +
    (0 + (0 + 1.5) / 2) * 0.21 = 1.1005 (the policy has no open requests of its own there,
    so all in flight count as decoding)."""
    view = view_of([WorkerState(0, in_flight=3, prefill_units=6000), WorkerState(1)],
                   {0: 1000})
    cost, own, *_ = Learned().costs(_req(2000), view)
    assert own == pytest.approx([0.7895, 0.283])
    assert cost == pytest.approx([3.506375, 1.1005])
    assert Learned().route(_req(2000), view).worker == 1


def test_under_heavy_load_spared_work_beats_a_shorter_queue() -> None:
    """8 in flight on each: own latency prefers worker 1 (0.6045 vs 0.407), but lam = 8 +
    (8 + 8) / 2 prices worker 0's spared prefill: 0.6045 + 3 * 0.5175 + 16 * 0.1075 = 3.877
    < 0.407 + 3 * 0.32 + 16 * 0.21 = 4.727. Both have prefill queued (no worker is idle),
    so the copy of worker 0's 1000 units is charged in full although r = 1: 3 * (1 + 16) *
    0.1 * 1.0 = 5.1 more on worker 1. Without it (copy_weight 0) the stall term alone
    decides, the same way."""
    view = view_of([WorkerState(0, in_flight=8, prefill_units=4000),
                    WorkerState(1, in_flight=8, prefill_units=1000)], {0: 1000})
    cost, own, *_ = Learned().costs(_req(2000), view)
    assert own == pytest.approx([0.6045, 0.407])
    assert cost == pytest.approx([3.877, 4.727 + 5.1])
    assert Learned().route(_req(2000), view).worker == 0
    cost, *_ = Learned(copy_weight=0).costs(_req(2000), view)
    assert cost == pytest.approx([3.877, 4.727])
    assert Learned(copy_weight=0).route(_req(2000), view).worker == 0


def test_a_copy_is_charged_in_full_when_no_worker_is_idle() -> None:
    """The view of the next test (worker 0 holds 2000 of 4000 units, 2 in flight, 2000
    units queued; copy_weight 30; r = 1, so the caches evict nothing), but worker 1 has
    100 units queued too: no worker could start the request at once, a copy is no longer
    spare capacity taking a burst, and it is charged as if cache were scarce: 30 * 1 * (1 +
    lam_1 0.5) * 0.1 * 2.0 = 9 more. Worker 1's own cost: 2.083 + (1 + 3) * 0.1 * 0.1
    (its 100 queued units) = 2.123, plus 9: the request stays with its prefix."""
    idle = view_of([WorkerState(0, in_flight=2, prefill_units=2000), WorkerState(1)],
                   {0: 2000})
    busy = view_of([WorkerState(0, in_flight=2, prefill_units=2000),
                    WorkerState(1, prefill_units=100)], {0: 2000})
    policy = Learned(copy_weight=30)
    assert policy.costs(_req(4000), idle)[0] == pytest.approx([2.634, 2.083])
    assert policy.costs(_req(4000), busy)[0] == pytest.approx([2.634, 2.123 + 9.0])
    assert Learned(copy_weight=30).route(_req(4000), idle).worker == 1
    assert Learned(copy_weight=30).route(_req(4000), busy).worker == 0


def test_requests_still_prefilling_count_among_those_its_prefill_stalls() -> None:
    """Two in flight on worker 0, one of them still prefilling (prefill_units 1000): the
    new request queues behind it and its prefill then stalls both, so lam_0 = 2 + (2 +
    mean in-flight 1) / 2 = 3.5, lam_1 = 0 + (0 + 1) / 2 = 0.5."""
    busy = view_of([WorkerState(0, in_flight=2, prefill_units=1000), WorkerState(1)])
    cost, own, ttft = map(np.array, Learned().costs(_req(500), busy)[:3])
    work = 0.1 * 0.5 + 0.005 * 0.125
    assert cost - own - 3 * ttft == pytest.approx([3.5 * work, 0.5 * work])


def test_decode_time_grows_with_the_context_in_flight() -> None:
    """Decode d = [0.02, 0.001, 0.05 s/token per 1e5 context units] (as if learned). One
    request in flight on each worker, but worker 0's has 50000 prompt units: the new
    request (2000 units, 4 tokens) would decode at 0.02 + 0.001 * 2 + 0.05 * 0.52 = 0.048
    s/token there against 0.02 + 0.002 + 0.05 * 0.02 = 0.023 on worker 1 (TTFT 0.22 on
    both). The context it saw is what the decode model learns from."""
    view = view_of([WorkerState(0, in_flight=1, decode_units=50000),
                    WorkerState(1, in_flight=1)])
    policy = Learned()
    policy.models.decode_model.theta = np.array([0.02, 0.001, 0.05])
    _, own, ttft, *_ = policy.costs(_req(2000), view)
    assert ttft == pytest.approx([0.22, 0.22])
    assert own == pytest.approx([0.22 + 3 * 0.048, 0.22 + 3 * 0.023])
    assert policy.route(_req(2000), view).worker == 1
    assert policy.open[7].x_dec == pytest.approx([1.0, 2.0, 0.02])


def test_a_copy_is_priced_by_how_scarce_cache_is() -> None:
    """4000 units, worker 0 holds 2000 and has 2 in flight (2000 units to prefill);
    copy_weight 30. While the engines' caches hold what the index believes (r = 1) the
    idle worker 1 wins: 2.634 against 2.083. With r = 0.9 (10% of believed prefixes were
    evicted; no age known, so the oldest rate is the overall one) worker 0's hit is 1800
    units, and copying them onto worker 1 costs 30 * (1 - 0.9) * (1 + lam_1 0.5) * 0.1 *
    1.8 = 0.81 more: 2.79825 against 2.893, the request stays with its group."""
    view = view_of([WorkerState(0, in_flight=2, prefill_units=2000), WorkerState(1)],
                   {0: 2000})
    cost, *_ = Learned(copy_weight=30).costs(_req(4000), view)
    assert cost == pytest.approx([2.634, 2.083])
    policy = Learned(copy_weight=30)
    policy.realisation.update(-1, 0.9, 1.0)
    cost, *_ = policy.costs(_req(4000), view)
    assert cost == pytest.approx([2.79825, 2.893])
    assert policy.route(_req(4000), view).worker == 0
    assert Learned(copy_weight=0).route(_req(4000), view).worker == 1


def test_new_content_goes_where_less_has_gone_lately() -> None:
    """An idle cluster, and worker 0 holds the first 5 of the request's 2000 units (a
    shared template): own latency prefers it by 4 * 0.1 * 5 / 1000 = 0.002 s (and a
    little attention). But every uncached unit so far went to worker 0 (its inflow is
    twice the mean, worker 1's none): balance_weight 0.01 adds 0.01 * 0.0001 s per unit
    times the excess, +0.001995 on worker 0 (1995 units) and -0.002 on worker 1, and the
    new prompt goes to worker 1. Without the balance it goes to worker 0."""
    view = view_of([WorkerState(0), WorkerState(1)], {0: 5})
    plain, *_ = Learned(balance_weight=0).costs(_req(2000), view)
    policy = Learned()
    assert policy.costs(_req(2000), view).cost == pytest.approx(plain)  # no inflow yet
    policy.inflow.add(0, 50_000.0)
    cost, *_ = policy.costs(_req(2000), view)
    assert cost == pytest.approx([plain[0] + 0.001995, plain[1] - 0.002])
    assert policy.telemetry()["inflow_excess"] == {"0": pytest.approx(1.0),
                                                   "1": pytest.approx(-1.0)}
    assert policy.route(_req(2000), view).worker == 1
    assert Learned(balance_weight=0).route(_req(2000), view).worker == 0


def test_scarcity_is_read_from_the_oldest_prefixes() -> None:
    """Forget 1; 9 samples at age bucket 0 fully cached and one at bucket 12 (about 8
    minutes) with nothing left: overall 0.9, but bucket 12 is estimated (0 + 0.9 * 1000) /
    (1000 + 1000) = 0.45 (one sample's worth of the overall rate), so the copy term's
    scarcity is copy_weight * 0.55, not * 0.1. Worker 0 holds 2000 units sent just now
    (bucket 0: (9000 + 900) / 10000 = 0.99, hit 1980); worker 1 is idle: its copy of
    1980 units costs 3 * 0.55 * (1 + 0.5) * 0.1 * 1.98 = 0.49005 more."""
    view = view_of([WorkerState(0, in_flight=2, prefill_units=2000), WorkerState(1)],
                   {0: 2000})
    policy = Learned(forget=1.0)
    for _ in range(9):
        policy.realisation.update(0, 1000, 1000)
    policy.realisation.update(12, 0, 1000)
    assert policy.realisation.overall == pytest.approx(0.9)
    assert policy.realisation.oldest() == pytest.approx(0.45)
    costs = policy.costs(_req(4000), view)
    assert costs.unc == pytest.approx([2020, 4000])
    policy.copy_weight = 0.0
    assert np.subtract(costs.cost, policy.costs(_req(4000), view).cost) == \
        pytest.approx([0.0, 0.49005])


class _Unrecorded:
    """Two workers hold 2000 units (say, by their engines' events) but the routing history
    has no record of either."""

    def match(self, units: np.ndarray, now: float = 0.0,
              adapter: str | None = None) -> np.ndarray:
        return np.array([2000, 2000, 0])

    def sizes(self) -> np.ndarray:
        return np.array([2000, 2000, 0])

    def match_last_sent(self, units: np.ndarray, now: float = 0.0,
                        adapter: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        return self.match(units), np.full(3, -np.inf)


def test_holders_without_a_record_get_the_overall_rate() -> None:
    """No age is known (-1): each holder's hit is 0.9 * 2000 = 1800 (TTFT 0.2619, own
    0.3249, cost 0.3249 + 3 * 0.2619 = 1.1106); worker 2 pays a whole copy: 0.513 + 3 *
    0.45 + 3 * (1 - 0.9) * (1 + lam 0) * 0.1 * 1.8 = 1.917; the holders tie, the lower
    index wins."""
    view = ClusterView([WorkerState(0), WorkerState(1), WorkerState(2)], _Unrecorded())
    policy = Learned()
    policy.realisation.update(-1, 0.9, 1.0)
    costs = policy.costs(_req(4000), view)
    assert costs.age == [-1, -1, -1]
    assert costs.cost == pytest.approx([1.1106, 1.1106, 1.917])
    assert policy.route(_req(4000), view).worker == 0


def test_only_allowed_workers_are_chosen_and_averaged() -> None:
    view = view_of([WorkerState(0), WorkerState(1, in_flight=4), WorkerState(2)], {0: 1000})
    view.allow([False, True, True])
    assert Learned().route(_req(2000), view).worker == 2


def _feedback(rid: int, worker: int, ttft: float, e2e: float, cached: int | None) -> Feedback:
    return Feedback(worker=worker, rid=rid, ok=True, prompt_units=2000, now=1.0,
                    decision=Decision(worker), e2e_s=e2e, ttft_s=ttft, cached_tokens=cached)


def test_learns_hit_realisation_and_reports_errors() -> None:
    """The index said 1000 cached, the engine 500: r = 0.5, and the next prediction uses it."""
    view = view_of([WorkerState(0), WorkerState(1)], {0: 1000})
    policy = Learned()
    d = policy.route(_req(2000), view)
    policy.on_complete(_feedback(7, d.worker, ttft=0.2, e2e=0.3, cached=500))
    assert policy.hit_realisation == pytest.approx(0.5)
    tel = policy.telemetry()
    assert tel["ttft"]["count"] == 1  # type: ignore[index]
    assert tel["e2e"]["mean_error_s"] == pytest.approx(0.1805 - 0.3)  # type: ignore[index]
    policy.on_complete(_feedback(7, policy.route(_req(2000), view).worker, ttft=0.2, e2e=0.5,
                                 cached=500))
    e2e = policy.telemetry()["e2e"]
    assert e2e["count"] == 2 and e2e["observed_sum_s"] == pytest.approx(0.8)  # type: ignore[index]
    # the sums are what the means are made of (a window is a difference of two reports)
    assert e2e["abs_error_sum_s"] == pytest.approx(2 * e2e["mean_abs_error_s"])  # type: ignore[index]
    assert e2e["error_sum_s"] == pytest.approx(2 * e2e["mean_error_s"])  # type: ignore[index]
    unc = policy.costs(_req(2000), view).unc
    assert unc[0] == pytest.approx(1500)
    assert policy.open == {} and sum(policy.share.units) == 0


def test_without_a_cached_report_the_ttft_says_what_was_cached() -> None:
    """No cached tokens reported: a request with nothing queued ahead that the index
    believed to hold 1000 of its 2000 units took 0.22 s, the priors' TTFT of 2000 uncached
    units: nothing was cached, r = 0. The inversion, by hand: u = 1000 gives 0.1 + 0.005 *
    1.5 + 0.01 = 0.1175 s, and 1000 cached is read back from it."""
    view = view_of([WorkerState(0), WorkerState(1)], {0: 1000})
    policy = Learned()
    a = policy.models.ttft_model.coefficients().tolist()
    assert cached_from_ttft(a, 2000, 0.1175) == pytest.approx(1000)
    assert cached_from_ttft(a, 2000, 0.22) == pytest.approx(0)
    assert cached_from_ttft(a, 2000, 5.0) == 0  # slower than no hit at all: none
    assert cached_from_ttft(a, 2000, 0.001) == 2000  # faster than the fixed cost: all
    d = policy.route(_req(2000), view)
    assert d.worker == 0
    policy.on_complete(_feedback(7, 0, ttft=0.22, e2e=0.3, cached=None))
    assert policy.hit_realisation == pytest.approx(0.0)
    # queued behind another prefill, the TTFT also measures the queue: nothing is inferred
    busy = view_of([WorkerState(0, in_flight=1, prefill_units=500), WorkerState(1)], {0: 1000})
    policy = Learned()
    policy.route(_req(2000), busy)
    assert policy.open[7].ahead > 0
    policy.on_complete(_feedback(7, 0, ttft=0.5, e2e=0.6, cached=None))
    assert policy.hit_realisation == 1.0 and policy.realisation.by_age() == {}


def test_completions_only_learn_from_the_e2e() -> None:
    """No TTFT (clients that do not stream): the joint E2E model learns, and the request's
    E2E less its predicted decode, read backwards, says what was cached. 2000 units, the
    index believes worker 0 holds 1000, 4 tokens: the priors predict 0.1175 s of TTFT and
    3 x (0.02 + 0.001 + 0.02 x 0) = 0.063 s of decode. It took 0.22 + 0.063 s: the TTFT of
    2000 uncached units, so nothing was cached, r = 0."""
    view = view_of([WorkerState(0), WorkerState(1)], {0: 1000})
    policy = Learned()
    assert not policy.models.completions_only
    d = policy.route(_req(2000), view)
    assert d.worker == 0
    policy.on_complete(dataclasses.replace(_feedback(7, 0, ttft=0.0, e2e=0.283, cached=None),
                                           ttft_s=None))
    assert policy.models.completions_only and policy.models.e2e_model.samples == 1
    assert policy.models.ttft_model.samples == 0 and policy.models.decode_model.samples == 0
    assert policy.hit_realisation == pytest.approx(0.0)
    coef = policy.models.e2e_model.coefficients()
    ttft = policy.costs(_req(2000), view).ttft
    assert ttft == pytest.approx(coef[0] * np.array([2.0, 2.0]) + coef[1] * 2.0 + coef[2])
    assert policy.telemetry()["completions_only"] == 1
    # one TTFT and the models that learn from it take over again
    d = policy.route(_req(2000), view)
    policy.on_complete(_feedback(7, d.worker, ttft=0.22, e2e=0.283, cached=0))
    assert not policy.models.completions_only


def test_completions_only_without_max_tokens_learn_decode_seconds() -> None:
    """No TTFT and no max_tokens: the E2E regression takes the decode half per request
    (o = 1), and decides with it the same way."""
    view = view_of([WorkerState(0), WorkerState(1, in_flight=2, decode_units=4000)])
    policy = Learned()
    req = RouteRequest(np.arange(2000, dtype=np.int64), rid=7, streamed=False)
    policy.route(req, view)
    policy.on_complete(dataclasses.replace(_feedback(7, 0, 0.0, 0.5, 0), ttft_s=None))
    assert policy.models.completions_only and policy.models.e2e_model.samples == 1
    d0, d1, d2 = policy.models.e2e_model.coefficients().tolist()[3:]
    costs = policy.costs(RouteRequest(np.arange(1000, dtype=np.int64), rid=8), view)
    ctx = np.array([1000.0, 5000.0]) / 1e5
    dec = d0 + d1 * (np.array([0.0, 2.0]) + 1.0) + d2 * ctx
    assert costs.own == pytest.approx(costs.ttft + dec)


def test_requests_that_do_not_stream_count_as_prefilling_until_their_predicted_first_token(
) -> None:
    """The router counts a request it sees no first token of as prefilling until it
    completes (``unstreamed_units``); the policy takes those units out of that count and
    counts its uncached units as queued ahead only until its predicted TTFT has passed
    (or it completes)."""
    policy = Learned()
    view = view_of([WorkerState(0), WorkerState(1)])
    req = RouteRequest(np.arange(3000, dtype=np.int64), rid=2, max_tokens=4, streamed=False)
    assert policy.route(req, view).worker == 0
    assert policy.pending.units == [3000.0, 0.0]
    predicted = policy.open[2].pred_ttft
    busy = view_of([WorkerState(0, in_flight=1, prefill_units=3000, unstreamed_units=3000),
                    WorkerState(1)])
    busy.now = predicted / 2
    assert policy.costs(_req(100), busy).ahead == [3000.0, 0.0]
    busy.now = predicted
    assert policy.costs(_req(100), busy).ahead == [0.0, 0.0]
    # a streamed request beside it is the router's to count, as before
    mixed = view_of([WorkerState(0, in_flight=2, prefill_units=5000, unstreamed_units=3000),
                     WorkerState(1)])
    mixed.now = predicted
    assert policy.costs(_req(100), mixed).ahead == [2000.0, 0.0]  # f_0 = 1
    policy.on_complete(dataclasses.replace(_feedback(2, 0, 0.0, 0.3, None), ttft_s=None))
    assert sum(policy.pending.units) == 0
    # completed before its predicted first token: taken out at once
    req = RouteRequest(np.arange(500, dtype=np.int64), rid=3, max_tokens=4, streamed=False)
    policy.route(req, view)
    assert sum(policy.pending.units) == 500
    policy.on_complete(dataclasses.replace(_feedback(3, 0, 0.0, 0.3, None), ttft_s=None))
    assert sum(policy.pending.units) == 0


def test_failures_teach_nothing() -> None:
    view = view_of([WorkerState(0), WorkerState(1)])
    policy = Learned()
    d = policy.route(_req(100), view)
    before = policy.models.ttft_model.theta.copy()
    policy.on_complete(dataclasses.replace(_feedback(7, d.worker, 0.1, 0.2, 0), ok=False,
                                           e2e_s=None, ttft_s=None))
    assert np.array_equal(policy.models.ttft_model.theta, before)
    assert policy.telemetry()["e2e"]["count"] == 0  # type: ignore[index]


def test_online_regression_recovers_a_linear_model() -> None:
    rng = np.random.default_rng(0)
    model = OnlineRegression([1.0, 1.0, 1.0], lam=1.0)
    for _ in range(200):
        x = np.array([rng.uniform(0, 8), rng.uniform(0, 30), 1.0])
        model.update(x, float(x @ [0.05, 0.002, 0.02]))
    assert model.coefficients() == pytest.approx([0.05, 0.002, 0.02], abs=1e-4)


def test_worker_removal_renumbers_open_requests() -> None:
    view = view_of([WorkerState(0), WorkerState(1, in_flight=9), WorkerState(2, in_flight=9)])
    policy = Learned()
    policy.on_workers_changed(3)
    d = policy.route(_req(100), view)
    assert d.worker == 0
    view2 = view_of([WorkerState(0, in_flight=9), WorkerState(1, in_flight=9), WorkerState(2)])
    d2 = dataclasses.replace(policy.route(RouteRequest(np.arange(100), rid=8, max_tokens=4),
                                          view2))
    assert d2.worker == 2
    policy.on_worker_removed(1, 2)
    assert policy.open[8].worker == 1 and len(policy.share) == 2


@pytest.mark.parametrize("args", [{"forget": 0.0}, {"forget": 1.5}, {"prior_ktoken_s": 0},
                                  {"forget": True}, {"ttft_weight": -1},
                                  {"copy_weight": float("nan")}, {"copy_weight": True},
                                  {"consolidate": 0.5}, {"ttft_scale": -1}])
def test_bad_parameters(args: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        make_router_policy("learned", args)


def test_capabilities() -> None:
    assert Learned.uses_index and not Learned.needs_probes and Learned.takes_seed


def test_a_fresh_prefix_is_worth_more_than_a_stale_longer_one() -> None:
    """Worker 0 was sent 3000 units of the prompt 100 s ago, worker 1 2000 units 0.1 s ago
    (age buckets 9 and 0). Learned (forget 1): 100 of 1000 matched units were cached at age
    bucket 9, 1000 of 1000 at bucket 0; overall 0.55, so bucket 9 (100 + 550) / 2000 =
    0.325, bucket 0 (1000 + 550) / 2000 = 0.775: hits 975 and 1550, the fresh prefix wins.
    At the overall rate alone (hits 1650 and 1100) the stale one would."""
    index = PrefixIndex(3)
    index.record(0, np.arange(3000, dtype=np.int64), 0.0)
    index.record(1, np.arange(2000, dtype=np.int64), 99.9)
    view = ClusterView([WorkerState(0), WorkerState(1), WorkerState(2)], index)
    view.now = 100.0
    policy = Learned(forget=1.0)
    policy.realisation.update(9, 100, 1000)
    policy.realisation.update(0, 1000, 1000)
    costs = policy.costs(_req(4000), view)
    assert costs.age == [9, 0, -1]
    assert costs.unc == pytest.approx([3025, 2450, 4000])
    assert policy.route(_req(4000), view).worker == 1
    flat = Learned(forget=1.0)
    flat.realisation.update(-1, 1100, 2000)
    assert flat.costs(_req(4000), view).unc == pytest.approx([2350, 2900, 4000])
    assert flat.route(_req(4000), view).worker == 0


def test_feedback_is_learned_in_the_age_bucket_it_was_routed_with() -> None:
    index = PrefixIndex(2)
    index.record(0, np.arange(1000, dtype=np.int64), 0.0)
    view = ClusterView([WorkerState(0), WorkerState(1)], index)
    view.now = 0.5  # bucket floor(log2(5)) = 2
    policy = Learned()
    d = policy.route(_req(2000), view)
    assert d.worker == 0
    policy.on_complete(_feedback(7, 0, ttft=0.2, e2e=0.3, cached=250))
    assert policy.realisation.by_age() == {"0.375s": pytest.approx(0.25)}
    assert policy.telemetry()["hit_realisation_by_age"] == {"0.375s": pytest.approx(0.25)}


def _train_two_workers(policy: Learned, ttft_scale: float, decode_scale: float) -> None:
    """200 requests of 2000 units (nothing cached, 4 tokens) alternating between two idle
    workers; worker 1's TTFT is ``ttft_scale`` times worker 0's 0.22 s and its decode
    ``decode_scale`` times 0.021 s per token."""
    for i in range(200):
        w = i % 2
        view = view_of([WorkerState(0), WorkerState(1)])
        view.allow([w == 0, w == 1])
        req = RouteRequest(np.arange(2000, dtype=np.int64), rid=i, max_tokens=4)
        assert policy.route(req, view).worker == w
        ttft = 0.22 * (ttft_scale if w else 1.0)
        decode = 3 * 0.021 * (decode_scale if w else 1.0)
        policy.on_complete(Feedback(worker=w, rid=i, ok=True, prompt_units=2000, now=1.0,
                                    decision=Decision(w), e2e_s=ttft + decode, ttft_s=ttft,
                                    cached_tokens=0))


def test_a_slow_worker_is_learned_and_avoided() -> None:
    """Worker 1 takes twice worker 0's time, prefill and decode alike. Its speed is read
    from the TTFT of requests that found nothing queued ahead (here all of them): the
    shared TTFT model learns the middle, the residuals deviate by about -+ln(2)/2 (less
    the prior's shrinkage and the 0.15 margin); its decode residuals deviate the same way,
    so the factor is acted on: the decode prediction, learned at the typical speed, is
    multiplied by it. With nothing queued, TTFT predictions stay the shared model's. The
    same request then goes to worker 0."""
    policy = Learned()
    _train_two_workers(policy, 2.0, 2.0)
    slow = policy.models.slow.factors(2)
    assert 1.3 < slow[1] / slow[0] < 1.6 and slow[0] * slow[1] == pytest.approx(1.0)
    assert slow == pytest.approx(policy.models.slow.ttft.factors(2))
    view = view_of([WorkerState(0), WorkerState(1)])
    own, ttft = map(np.array, policy.costs(_req(2000), view)[1:3])
    assert ttft[0] == pytest.approx(ttft[1])
    assert (own - ttft)[1] / (own - ttft)[0] == pytest.approx(slow[1] / slow[0])
    assert policy.route(_req(2000), view).worker == 0
    assert policy.telemetry()["worker_slowness"] == {"0": pytest.approx(slow[0]),
                                                     "1": pytest.approx(slow[1])}


def test_a_slow_worker_drains_its_queue_slowly() -> None:
    """The same slow worker with the same queue as worker 0 (1000 uncached units ahead,
    none of them this policy's, so all count): the wait for it, a0 * 1000 / 1000 s, is
    multiplied by each worker's factor; the request's own prefill is not."""
    policy = Learned()
    _train_two_workers(policy, 2.0, 2.0)
    slow = np.array(policy.models.slow.factors(2))
    a0 = policy.models.ttft_model.coefficients()[0]
    queued = view_of([WorkerState(0, in_flight=1, prefill_units=1000),
                      WorkerState(1, in_flight=1, prefill_units=1000)])
    idle = view_of([WorkerState(0), WorkerState(1)])
    ttft_queued = policy.costs(_req(2000), queued).ttft
    ttft_idle = policy.costs(_req(2000), idle).ttft
    assert np.subtract(ttft_queued, ttft_idle) == pytest.approx(slow * a0)


def test_without_max_tokens_the_decode_witness_reads_decode_seconds() -> None:
    """Clients that omit max_tokens: the decode witness compares each request's decode
    seconds with their running mean, so a worker twice as slow at both is still found."""
    policy = Learned()
    for i in range(200):
        w = i % 2
        view = view_of([WorkerState(0), WorkerState(1)])
        view.allow([w == 0, w == 1])
        req = RouteRequest(np.arange(2000, dtype=np.int64), rid=i, max_tokens=None)
        assert policy.route(req, view).worker == w
        ttft, decode = 0.22 * (1 + w), 0.063 * (1 + w)
        policy.on_complete(Feedback(worker=w, rid=i, ok=True, prompt_units=2000, now=1.0,
                                    decision=Decision(w), e2e_s=ttft + decode, ttft_s=ttft,
                                    cached_tokens=0))
    assert policy.models.slow.decode.factors(2)[1] > 1.1
    slow = policy.models.slow.factors(2)
    assert slow[1] > 1.1 and slow[0] < 1.0
    assert policy.route(RouteRequest(np.arange(2000, dtype=np.int64), rid=999,
                                     max_tokens=None), view_of([WorkerState(0),
                                                                WorkerState(1)])).worker == 0


def test_a_worker_slow_at_prefill_only_is_not_called_slow() -> None:
    """Worker 1's TTFT is twice worker 0's but its decode is not (what the traffic a worker
    is given can do to one kind of residual: a long-prompt mix, a prefix burst): the TTFT
    residuals alone would give it a factor, but the decode residuals do not agree, so
    both factors stay exactly 1; and the same when only the decode is slower."""
    for ttft_scale, decode_scale in ((2.0, 1.0), (1.0, 2.0)):
        policy = Learned()
        _train_two_workers(policy, ttft_scale, decode_scale)
        fired, quiet = ((policy.models.slow.ttft, policy.models.slow.decode) if ttft_scale > 1 else
                        (policy.models.slow.decode, policy.models.slow.ttft))
        assert fired.factors(2)[1] > 1.1 and list(quiet.factors(2)) == [1.0, 1.0]
        assert list(policy.models.slow.factors(2)) == [1.0, 1.0]


def test_only_requests_with_nothing_ahead_teach_the_speed() -> None:
    """A request queued behind another's prefill measures the queue as much as the
    worker: its TTFT leaves the speed estimate alone."""
    policy = Learned()
    busy = view_of([WorkerState(0, in_flight=1, prefill_units=4000), WorkerState(1)])
    busy.allow([True, False])
    policy.route(_req(2000), busy)
    policy.on_complete(_feedback(7, 0, ttft=5.0, e2e=5.1, cached=0))
    assert sum(policy.models.slow.ttft.counts) == 0
    policy.route(_req(2000), view_of([WorkerState(0), WorkerState(1)]))
    policy.on_complete(_feedback(7, 0, ttft=5.0, e2e=5.1, cached=0))
    assert sum(policy.models.slow.ttft.counts) == 1


def test_the_reported_e2e_reads_its_own_decode_model_and_decides_nothing() -> None:
    """``predicted_s`` is the chosen worker's TTFT plus (O - 1) times ``decode_report``'s
    time per token; the costs, and so the choice, read only ``decode_model``. Each
    completion teaches ``decode_report`` as a sample of weight O - 1."""
    view = view_of([WorkerState(0, in_flight=1, decode_units=50000),
                    WorkerState(1, in_flight=1)])
    policy = Learned()
    policy.models.decode_model.theta = np.array([0.02, 0.001, 0.05])
    before = policy.costs(_req(2000, out=5), view).cost
    policy.models.decode_report.theta = np.array([0.01, 0.0, 0.0])  # 0.01 s per token anywhere
    assert policy.costs(_req(2000, out=5), view).cost == before
    d = policy.route(_req(2000, out=5), view)
    assert d.worker == 1 and d.predicted_s == pytest.approx(0.22 + 4 * 0.01)
    m = policy.models.decode_report.M.copy()
    policy.on_complete(_feedback(7, 1, ttft=0.2, e2e=0.6, cached=0))
    x = np.array([1.0, 2.0, 0.02])
    np.testing.assert_allclose(policy.models.decode_report.M,
                               policy.forget * m + 4 * np.outer(x, x))
    assert policy.telemetry()["reported_decode_coefficients"] == \
        policy.models.decode_report.coefficients().tolist()


def test_ttft_scale_weighs_ttft_by_the_observed_ratio_of_e2e_to_ttft() -> None:
    """ttft_scale s: TTFT's weight is ttft_weight * (E2E sum / TTFT sum) ** s over streamed
    completions (forget 1: plain sums); before any TTFT, and with s = 0, ttft_weight."""
    view = view_of([WorkerState(0), WorkerState(1)], {0: 1000})
    plain, scaled = Learned(forget=1.0), Learned(forget=1.0, ttft_scale=0.5)
    assert scaled.ttft_weight_now == 3.0
    for policy in (plain, scaled):
        for rid, (ttft, e2e) in enumerate([(0.1, 3.0), (0.3, 5.0)]):
            policy.route(RouteRequest(np.arange(2000, dtype=np.int64), rid=rid,
                                      max_tokens=4), view)
            policy.on_complete(_feedback(rid, 0, ttft=ttft, e2e=e2e, cached=1000))
    assert plain.ttft_weight_now == 3.0
    assert scaled.ttft_weight_now == pytest.approx(3.0 * (8.0 / 0.4) ** 0.5)
    assert scaled.telemetry()["ttft_weight"] == pytest.approx(3.0 * 20 ** 0.5)
    # the cost is own + weight * TTFT + ... : only the TTFT term moves
    a, b = plain.costs(_req(2000), view), scaled.costs(_req(2000), view)
    np.testing.assert_allclose(np.subtract(b.cost, a.cost),
                               (3.0 * 20 ** 0.5 - 3.0) * np.array(a.ttft))


def test_without_max_tokens_the_output_is_expected_from_requests_that_began_alike() -> None:
    """Clients that omit max_tokens, or send a cap: the decode term uses the output the
    engines reported for earlier requests that began the same way (the same application's
    prompt), so a long writer goes where fewer decode with it and a short answer where its
    prefill is quickest; a client that sends each output exactly is read as before."""
    def app(head: int, rid: int, max_tokens: int | None = None) -> RouteRequest:
        units = np.full(1000, 10_000 + rid, dtype=np.int64)
        units[:600] = head
        return RouteRequest(units, rid=rid, max_tokens=max_tokens)

    policy = Learned()
    view = view_of([WorkerState(0)])
    assert policy.costs(app(1, 0), view).out is None  # nothing reported yet
    for rid, (head, out) in enumerate([(1, 400), (2, 2)] * 5):
        req = app(head, rid)
        policy.route(req, view)
        policy.on_complete(Feedback(worker=0, rid=rid, ok=True, prompt_units=1000, now=1.0,
                                    decision=Decision(0), e2e_s=0.2 + 0.02 * (out - 1), ttft_s=0.2,
                                    cached_tokens=0, output_tokens=out))
    assert policy.costs(app(1, 90), view).out == pytest.approx(400)
    assert policy.costs(app(2, 91), view).out == pytest.approx(2)
    # its telemetry: the first had no estimate; the second (app 2) expected app 1's 400
    # for 2; every later one its own application's mean, exactly
    errors = policy.telemetry()["output"]
    assert isinstance(errors, dict) and errors["count"] == 9
    assert errors["mean_abs_error_tokens"] == pytest.approx(398 / 9)
    assert errors["mean_observed_tokens"] == pytest.approx((4 * 400 + 5 * 2) / 9)
    assert policy.costs(app(3, 92), view).out == pytest.approx(201, rel=0.01)  # all: mean
    # the decode model learned per token from the reported outputs: ~0.02 s
    assert policy.models.decode_model.predict([1.0, 1.0, 0.01]) == pytest.approx(0.02, rel=0.05)
    # its own decode on a worker with many decoding: a long writer's far longer
    busy = [WorkerState(0, in_flight=30, decode_units=30_000), WorkerState(1)]
    long_own = policy.costs(app(1, 93), view_of(busy)).own
    short_own = policy.costs(app(2, 94), view_of(busy)).own
    assert long_own[0] - long_own[1] > 100 * (short_own[0] - short_own[1]) > 0
    # with max_tokens: a cap is scaled by the ratio of outputs to caps seen
    policy.route(app(1, 95, max_tokens=1000), view)
    policy.on_complete(Feedback(worker=0, rid=95, ok=True, prompt_units=1000, now=1.0,
                                decision=Decision(0), e2e_s=8.2, ttft_s=0.2, cached_tokens=0,
                                output_tokens=400))
    assert policy.costs(app(1, 96, max_tokens=1000), view).out == pytest.approx(400)
    exact = Learned()  # outputs equal to max_tokens: taken as they are
    exact.route(app(1, 97, max_tokens=50), view)
    exact.on_complete(Feedback(worker=0, rid=97, ok=True, prompt_units=1000, now=1.0,
                               decision=Decision(0), e2e_s=1.2, ttft_s=0.2, cached_tokens=0,
                               output_tokens=50))
    assert exact.costs(app(1, 98, max_tokens=7), view).out == 7.0


def _empty_pool_view(per_token: float | None = 1.0) -> ClusterView:
    """Two idle workers with pools of 10,000 tokens, ``per_token`` units a token."""
    view = ClusterView([WorkerState(0, kv_capacity=10_000), WorkerState(1, kv_capacity=10_000)],
                       PrefixIndex(2))
    view.units_per_token = per_token
    return view


def _pool_view(now: float, usage: float, held_prompt: int,
               per_token: float | None = 1.0) -> ClusterView:
    """Two workers with pools of 10,000 tokens; worker 0 was sent arange(held_prompt) at 0
    (decoding now, ``usage`` of its pool in use), worker 1 is idle."""
    index = PrefixIndex(2)
    index.record(0, np.arange(held_prompt, dtype=np.int64), 0.0)
    view = ClusterView([WorkerState(0, in_flight=1, decode_units=held_prompt,
                                    kv_usage=usage, kv_capacity=10_000),
                        WorkerState(1, kv_capacity=10_000)], index)
    view.now = now
    view.units_per_token = per_token  # engine tokens are router units
    return view


def test_a_pool_held_by_a_decoding_request_makes_a_newcomer_wait() -> None:
    """A (8000 units, 4 tokens out) goes to worker 0 at t=0: predicted TTFT 0.8 + 0.16 +
    0.01 = 0.97 s, decode 3 x 0.021 = 0.063 s; its first token at t=1 makes it due at
    1.063, holding 8004 units (prompt and output). At t=1.02 worker 0 reports 80% of its
    10,000 in use, and B (3000 fresh units, 4 out) needs 3004: no room until A is due, so
    its TTFT there is 0.043 + its own prefill 0.3225 + 0.01 = 0.3755 s (the queue alone
    says 0.3325), and B goes to worker 1. A continuation of A (9000 units, the first 8000
    held by A) needs only its new 1004 units: no wait on worker 0."""
    policy = Learned()
    a = policy.route(RouteRequest(np.arange(8000, dtype=np.int64), rid=1, max_tokens=4),
                     _empty_pool_view())
    assert a.worker == 0 and a.predicted_s == pytest.approx(1.033)
    fresh = RouteRequest(np.arange(10_000, 13_000, dtype=np.int64), rid=2, max_tokens=4)
    before_first_token = policy.costs(fresh, _pool_view(1.02, 0.8, 8000))
    assert before_first_token.room == [0.0, 0.0]  # A is not known to be decoding yet
    policy.on_first_token(1, 0, 1.0)
    costs = policy.costs(fresh, _pool_view(1.02, 0.8, 8000))
    assert costs.room == pytest.approx([0.043, 0.0])
    assert costs.ttft == pytest.approx([0.3755, 0.3325])
    assert policy.route(fresh, _pool_view(1.02, 0.8, 8000)).worker == 1
    assert policy.open[2].need == pytest.approx(3004)
    turn = RouteRequest(np.arange(9000, dtype=np.int64), rid=3, max_tokens=4)
    assert policy.costs(turn, _pool_view(1.02, 0.8, 8000)).room[0] == 0.0
    view = _pool_view(1.02, 0.8, 8000)
    view.allow([True, False])
    assert policy.route(turn, view).worker == 0
    assert policy.open[3].need == pytest.approx(1004)
    # A finished: nothing holds worker 0's pool any more
    policy.on_complete(Feedback(worker=0, rid=1, ok=True, prompt_units=8000, now=1.06,
                                decision=Decision(0), e2e_s=1.06, ttft_s=1.0))
    assert policy.costs(fresh, _pool_view(1.07, 0.8, 8000)).room == [0.0, 0.0]


def test_no_wait_for_room_without_the_pool_in_router_units() -> None:
    """Until an engine has reported a prompt's tokens the policy does not know how many
    router units (characters, say) a pool token is, and claims no wait."""
    policy = Learned()
    policy.route(RouteRequest(np.arange(8000, dtype=np.int64), rid=1, max_tokens=4),
                 _empty_pool_view(None))
    policy.on_first_token(1, 0, 1.0)
    fresh = RouteRequest(np.arange(10_000, 13_000, dtype=np.int64), rid=2, max_tokens=4)
    assert policy.costs(fresh, _pool_view(1.02, 0.8, 8000, None)).room == [0.0, 0.0]


def test_a_wait_for_room_does_not_teach_the_ttft_model() -> None:
    policy = Learned()
    policy.route(RouteRequest(np.arange(8000, dtype=np.int64), rid=1, max_tokens=4),
                 _empty_pool_view())
    policy.on_first_token(1, 0, 1.0)
    view = _pool_view(1.02, 0.8, 8000)
    view.allow([True, False])
    fresh = RouteRequest(np.arange(10_000, 13_000, dtype=np.int64), rid=2, max_tokens=4)
    assert policy.route(fresh, view).worker == 0
    assert policy.open[2].room == pytest.approx(0.043)
    before = policy.models.ttft_model.samples
    policy.on_complete(Feedback(worker=0, rid=2, ok=True, prompt_units=3000, now=6.0,
                                decision=Decision(0), e2e_s=5.0, ttft_s=4.9))
    assert policy.models.ttft_model.samples == before
    assert policy.telemetry()["ttft"]["count"] == 1  # type: ignore[index]  # its error counts


def test_the_pool_is_counted_in_router_units() -> None:
    """Replies say 1000 prompt tokens for 4000 units (characters): the router's view says 4
    units a token, so a pool of 10,000 tokens is 40,000 units, and 4 output tokens 16 units
    of it."""
    policy = Learned()
    router = Router(policy, 2)
    for w in range(2):
        router.report_load(w, running=0, waiting=0, kv_usage=0.0, kv_capacity=10_000)
    d = router.route(RouteRequest(np.arange(4000, dtype=np.int64), max_tokens=4), 0.0)
    assert router.view.units_per_token is None  # nothing reported yet
    router.complete(d, 1.0, ttft_s=0.5, prompt_tokens=1000)
    assert router.view.units_per_token == 4.0 == router.units_per_token()
    view = _empty_pool_view(4.0)
    a = policy.route(RouteRequest(np.arange(5000, 35_000, dtype=np.int64), rid=2, max_tokens=4),
                     view)
    assert policy.open[2].need == pytest.approx(30_016)
    policy.on_first_token(2, a.worker, 2.0)
    # 30,016 of 40,000 held: a fresh request of 12,000 units waits, one of 9,000 does not
    busy = ClusterView([WorkerState(w, kv_capacity=10_000, kv_usage=0.75 if w == a.worker
                                    else 0.0) for w in range(2)], PrefixIndex(2))
    busy.now, busy.units_per_token = 2.01, 4.0
    big = RouteRequest(np.arange(50_000, 62_000, dtype=np.int64), rid=3, max_tokens=4)
    small = RouteRequest(np.arange(70_000, 79_000, dtype=np.int64), rid=4, max_tokens=4)
    assert policy.costs(big, busy).room[a.worker] > 0
    assert policy.costs(small, busy).room[a.worker] == 0.0


def test_telemetry_counts_the_models_resets() -> None:
    policy = Learned()
    assert policy.telemetry()["model_resets"] == 0
    policy.models.decode_model.P = -np.eye(3)  # astray: the next sample resets it
    policy.models.decode_model.update([1.0, 2.0, 0.1], 0.02)
    assert policy.telemetry()["model_resets"] == 1


def _slot_view(now: float, max_running: int, in_flight: int = 1) -> ClusterView:
    """Two workers that report no pool; worker 0, capped at ``max_running`` running
    requests, has ``in_flight`` in flight (A decoding), worker 1 is idle and uncapped."""
    view = ClusterView([WorkerState(0, in_flight=in_flight, decode_units=8000,
                                    max_running=max_running), WorkerState(1)], PrefixIndex(2))
    view.now = now
    return view


def test_a_worker_whose_slots_are_full_makes_a_newcomer_wait() -> None:
    """A (8000 units, 4 out) goes to worker 0 at t=0; its first token at t=1 makes it due
    at 1.063 (test_a_pool_held_by_a_decoding_request_makes_a_newcomer_wait). Worker 0 runs
    at most one request: at t=1.02 B (3000 fresh units) is first in line for its slot and
    waits for A, TTFT 0.043 + 0.3225 + 0.01 = 0.3755 s against the queue's 0.3325, and
    goes to worker 1. With a second slot, or no cap known, there is no wait."""
    policy = Learned()
    policy.route(RouteRequest(np.arange(8000, dtype=np.int64), rid=1, max_tokens=4),
                 _empty_pool_view(None))
    policy.on_first_token(1, 0, 1.0)
    fresh = RouteRequest(np.arange(10_000, 13_000, dtype=np.int64), rid=2, max_tokens=4)
    costs = policy.costs(fresh, _slot_view(1.02, 1))
    assert costs.room == pytest.approx([0.043, 0.0])
    assert costs.ttft == pytest.approx([0.3755, 0.3325])
    assert policy.route(fresh, _slot_view(1.02, 1)).worker == 1
    assert policy.costs(fresh, _slot_view(1.02, 2)).room == [0.0, 0.0]
    assert policy.costs(fresh, _slot_view(1.02, 0)).room == [0.0, 0.0]
    # second in line (another request admitted and not yet decoding): still A's due at
    # least, as only A is known to decode there
    assert policy.costs(fresh, _slot_view(1.02, 1, in_flight=2)).room[0] == pytest.approx(0.043)


def test_a_worker_whose_adapter_slots_are_full_makes_another_adapter_wait() -> None:
    """Both workers run one LoRA adapter at a time (``max_loras`` 1). A (adapter x,
    8000 units) goes to worker 0, due at its predicted E2E; then B (adapter y, fresh)
    would wait there until A is done, so it goes to worker 1; C (x again) may join A and
    would wait on worker 1 (B holds its slot). With no cap reported there is no wait."""
    policy = Learned()

    def view(loras: int) -> ClusterView:
        v = ClusterView([WorkerState(0, max_loras=loras, adapters=dict(policy_open)),
                         WorkerState(1, max_loras=loras)], PrefixIndex(2))
        v.now = 0.5
        return v

    policy_open: dict[str, int] = {}
    a = RouteRequest(np.arange(8000, dtype=np.int64), rid=1, max_tokens=4, adapter="x")
    assert policy.route(a, _empty_pool_view(None)).worker == 0
    policy_open["x"] = 1
    b = RouteRequest(np.arange(10_000, 13_000, dtype=np.int64), rid=2, max_tokens=4,
                     adapter="y")
    due = policy.open[1].sent + policy.costs(a, _empty_pool_view(None)).own[0]
    costs = policy.costs(b, view(1))
    assert costs.room[1] == 0.0 and costs.room[0] > 0.0
    assert costs.ttft[0] >= due - 0.5
    assert policy.route(b, view(1)).worker == 1
    c = RouteRequest(np.arange(20_000, 23_000, dtype=np.int64), rid=3, max_tokens=4,
                     adapter="x")
    room = policy.costs(c, view(1)).room
    assert room[0] == 0.0 and room[1] > 0.0
    assert policy.costs(b, view(0)).room == [0.0, 0.0]
    policy.on_complete(Feedback(worker=0, rid=1, ok=True, prompt_units=8000, now=1.0,
                                decision=Decision(0), e2e_s=1.0, ttft_s=0.5))
    assert policy.costs(b, view(1)).room == [0.0, 0.0]  # A is done: x's slot is free


def test_requests_other_routers_sent_count_through_the_engines_report() -> None:
    """Two workers this router left idle; worker 0's engine reports 6 running and 2 queued
    (another router's requests): it counts 8 requests there, so a prefill there delays
    more of them and the request goes to worker 1. Where the engine reports fewer than
    the router's own count, the router's count stands."""
    policy = Learned()
    view = ClusterView([WorkerState(0, running=6, waiting=2), WorkerState(1)], PrefixIndex(2))
    req = RouteRequest(np.arange(1000, dtype=np.int64), rid=1, max_tokens=4)
    costs = policy.costs(req, view)
    assert costs.seen == [8, 0]
    assert costs.cost[0] > costs.cost[1]
    assert policy.route(req, view).worker == 1
    own = ClusterView([WorkerState(0, in_flight=3, running=1), WorkerState(1)], PrefixIndex(2))
    assert policy.costs(req, own).seen == [3, 0]


def test_several_routers_send_a_prompt_none_can_place_to_its_home() -> None:
    """With ``replicas`` > 1 a prompt no worker is known to hold more of goes to its home
    (the same worker from every router, :mod:`kvroute.routing.home`) while its cost there
    is within the band (1 before any evidence: at most twice the best); one router keeps
    its own choice (ties: the lowest index)."""
    from kvroute.routing.home import Home

    idle = view_of([WorkerState(0), WorkerState(1)])
    n = next(n for n in range(2000, 2100)
             if Home(1.0).place(np.arange(n), [0, 0], np.ones(2, bool), [0, 1])[0] == 1)
    assert Learned().route(_req(n), idle).worker == 0
    routers = [Learned(seed=s, replicas=2) for s in (1, 2)]
    assert [r.route(_req(n), idle).worker for r in routers] == [1, 1]
    # a queue at home past the band: the best choice stands
    busy_home = view_of([WorkerState(0), WorkerState(1, in_flight=2, prefill_units=20_000)])
    assert Learned(replicas=2).route(_req(n), busy_home).worker == 0
    # a worker known to hold more of it: no home, the index decides as with one router
    known = view_of([WorkerState(0), WorkerState(1)], {0: 1000})
    assert Learned(replicas=2).route(_req(n), known).worker == 0


def test_the_home_band_learns_what_the_engines_found_cached_there() -> None:
    idle = view_of([WorkerState(0), WorkerState(1)])
    policy = Learned(forget=1.0, replicas=2)
    d = policy.route(_req(2000), idle)
    assert policy.telemetry()["home_sent"] == 1
    policy.on_complete(_feedback(7, d.worker, ttft=0.2, e2e=0.3, cached=1500))
    assert policy.home is not None
    assert policy.home.surprise == pytest.approx((1.0 + 0.75) / 3)
    assert policy.telemetry()["home_band"] == pytest.approx(2 * 1.75 / 3)
    assert "home_band" not in Learned().telemetry()
    with pytest.raises(ConfigError, match="replicas"):
        Learned(replicas=0)


def test_a_second_slot_for_an_adapter_is_priced_by_the_cold_arrivals() -> None:
    """Two workers with two adapter slots each; x runs on worker 0 (one request of 800
    output tokens, its prefill queued). A request of 400 for x is cheaper on the idle
    worker 1, until adapters have been arriving cold (open nowhere) and holding the slots
    they open: then a slot opened on worker 1 costs its whole span times the rate
    ``AdapterSlots.slot_rates`` gives, and joining x on worker 0 extends x's hold there
    by less."""

    def route_second(policy: Learned) -> tuple[int, list[float]]:
        first = RouteRequest(np.arange(4000, dtype=np.int64), rid=1, max_tokens=800,
                             adapter="x")
        idle = view_of([WorkerState(0, max_loras=2), WorkerState(1, max_loras=2)])
        idle.now = 20.0
        policy.route(first, idle)
        view = view_of([WorkerState(0, max_loras=2, adapters={"x": 1}, in_flight=1,
                                    prefill_units=4000), WorkerState(1, max_loras=2)])
        view.now = 20.0
        second = RouteRequest(np.arange(10_000, 10_200, dtype=np.int64), rid=2, max_tokens=400,
                              adapter="x")
        cost = policy.costs(second, view).cost
        return policy.route(second, view).worker, cost

    quiet = Learned()
    assert route_second(quiet)[0] == 1
    busy = Learned()
    for k in range(6):  # cold arrivals 1 s apart, each holding its slot for 8 s
        busy.slots.sent(100 + k, 1, f"c{k}", due=k + 8.0, now=float(k))
    for k in range(6):
        busy.slots.done(100 + k, now=k + 8.0)
    assert busy.slots.slot_rates(3)[0] > 0.5
    worker, cost = route_second(busy)
    assert worker == 0 and cost[1] > cost[0]



def test_an_adapter_queued_on_one_worker_waits_there() -> None:
    """One adapter slot per worker: x holds worker 0 (one long request), y holds worker 1
    (a short one) and z queues on worker 0 behind x. A new z request would wait less on
    worker 1, but it is closed there (z waits in one place); where worker 0 may not be
    used, worker 1 stays open."""

    def policy_with(queued: bool) -> Learned:
        policy = Learned()
        policy.slots.sent(100, 0, "x", due=60.0, now=0.0)
        policy.slots.sent(101, 1, "y", due=3.0, now=0.0)
        if queued:
            policy.slots.sent(102, 0, "z", due=70.0, now=1.0)
        return policy

    def view(allowed: list[bool] | None = None) -> ClusterView:
        v = view_of([WorkerState(0, max_loras=1, adapters={"x": 1, "z": 1}, in_flight=2),
                     WorkerState(1, max_loras=1, adapters={"y": 1}, in_flight=1)])
        v.allow(allowed)
        v.now = 2.0
        return v

    req = RouteRequest(np.arange(3000, dtype=np.int64), rid=1, max_tokens=100, adapter="z")
    assert policy_with(False).route(req, view()).worker == 1  # y is done sooner than x
    queued = policy_with(True)
    costs = queued.costs(req, view())
    assert costs.room[1] < costs.room[0] and costs.cost[1] == float("inf")
    assert queued.route(req, view()).worker == 0
    assert policy_with(True).route(req, view([False, True])).worker == 1
