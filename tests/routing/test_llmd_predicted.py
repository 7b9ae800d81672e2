"""llmd_predicted (llm-d with its latency predictor): affinity filters at 0.99 and 0.80,
the SLO-headroom tier, the blended headroom score, the weighted-random pick, warm-up and
retraining of the online stand-in for the XGBoost sidecar."""

from __future__ import annotations

import numpy as np
import pytest

from kvroute.errors import ConfigError
from kvroute.routing.base import ClusterView, Decision, Feedback, WorkerState
from kvroute.routing.llmd import LlmD
from kvroute.routing.llmd_predicted import LlmDPredicted
from kvroute.routing.registry import make_router_policy
from tests.routing.views import prompt, view_of

L = 1600  # 100 blocks of 16


def trained(seed: int = 0, waiting_s: float = 0.0, **kwargs: float) -> LlmDPredicted:
    """TTFT = 0.1 s + waiting_s x waiting + 1 s per 1000 uncached units; TPOT 0.01 s."""
    pol = LlmDPredicted(seed, **kwargs)  # type: ignore[arg-type]
    ttft = np.zeros(9)
    ttft[0], ttft[3], ttft[8] = 0.1, waiting_s, 1.0
    tpot = np.zeros(8)
    tpot[0] = 0.01
    pol.ttft_coef, pol.tpot_coef, pol.trained_at = ttft, tpot, 0.0
    return pol


def three(waiting0: int = 0) -> ClusterView:
    """w0 holds the whole prompt (prefix 1.0), w1 half (0.5), w2 nothing: TTFT 0.1 / 0.9 /
    1.7 s with the model above."""
    view = view_of([WorkerState(0, waiting=waiting0), WorkerState(1), WorkerState(2)],
                   {0: L})
    assert view._index is not None
    view._index.record(1, np.arange(L // 2, dtype=np.int64), 0.0)  # type: ignore[attr-defined]
    return view


def test_strict_affinity_keeps_the_full_hit() -> None:
    """Prefix scores [1, .5, 0]: the 0.99 filter keeps w0 (unless skipped, 1%, and then the
    0.80 filter keeps it too): all 300 seeded decisions go to w0, branch 'predicted'."""
    pol = trained(seed=4)
    ds = [pol.route(prompt(L), three()) for _ in range(300)]
    assert {(d.worker, d.branch) for d in ds} == {(0, "predicted")}
    assert ds[0].predicted_s == pytest.approx(0.1)


def test_affinity_broken_when_5s_worse_then_the_slo_tier() -> None:
    """SLOs 1 s / 50 ms. w0 has 10 waiting at 1 s each: TTFT 10.1 > 0.9 (w1) + 5 -> affinity
    broken; the positive tier is w1 alone (0.9 s < 1 s; w2 1.7 s fails); the 0.80 filter has
    no sticky worker left."""
    pol = trained(seed=1, waiting_s=1.0, ttft_slo_s=1.0, tpot_slo_s=0.05)
    assert {pol.route(prompt(L), three(waiting0=10)).worker for _ in range(100)} == {1}
    # 5 waiting: TTFT 5.1 <= 0.9 + 5, affinity holds: w0 though it misses the SLO (the
    # negative tier), but for the 1% of skipped filters, which go to w1; 6: broken
    picks = [pol.route(prompt(L), three(waiting0=5)).worker for _ in range(400)]
    assert set(picks) <= {0, 1} and picks.count(0) >= 388
    assert {pol.route(prompt(L), three(waiting0=6)).worker for _ in range(100)} == {1}


def test_headroom_scores_by_hand() -> None:
    """SLOs 1 s / 50 ms, TTFT [.2, .5, .9], TPOT .01: headroom .648 / .408 / .088 s; 'least'
    scores the least headroom highest, 'most' the most. Without SLOs (0: the negative tier),
    TTFT [.5, 1, 2], TPOT [.01, .05, .1]: h = -.402 / -.81 / -1.62, the least violation
    highest."""
    ttft, tpot, keep = np.array([0.2, 0.5, 0.9]), np.full(3, 0.01), np.arange(3)
    least = LlmDPredicted(ttft_slo_s=1.0, tpot_slo_s=0.05)
    assert least.scores(ttft, tpot, keep, positive=True) == pytest.approx(
        [0.01, 0.01 + 0.99 * 0.24 / 0.56, 1.0])
    most = LlmDPredicted(ttft_slo_s=1.0, tpot_slo_s=0.05, strategy="most")
    assert most.scores(ttft, tpot, keep, positive=True) == pytest.approx(
        [1.0, 0.01 + 0.99 * 0.32 / 0.56, 0.01])
    none = LlmDPredicted()
    s = none.scores(np.array([0.5, 1.0, 2.0]), np.array([0.01, 0.05, 0.1]), keep,
                    positive=False)
    assert s == pytest.approx([1.0, 0.01 + 0.99 * 0.81 / 1.218, 0.01])
    assert none.scores(np.ones(2), np.ones(2), np.arange(2), False) == pytest.approx([1, 1])


def test_weighted_random_pick() -> None:
    """No SLOs, two cold workers: equal latency -> about half each; w1 with 2 waiting at 0.2 s
    (slower) scores 0.01 against 1 -> chosen about 1% of the time (0.01/1.01)."""
    pol = trained(seed=2, waiting_s=0.2)
    even = view_of([WorkerState(0), WorkerState(1)])
    share = np.mean([pol.route(prompt(160), even).worker for _ in range(4000)])
    assert share == pytest.approx(0.5, abs=0.03)
    skew = view_of([WorkerState(0), WorkerState(1, waiting=2)])
    share = np.mean([pol.route(prompt(160), skew).worker for _ in range(4000)])
    assert share == pytest.approx(0.01 / 1.01, abs=0.006)


def test_warmup_routes_as_the_default_profile_then_retrains_every_10s() -> None:
    """Before min_samples completions: llmd's decision, branch 'warmup'. After: a snapshot
    of the models, refreshed only when 10 s of the view's clock have passed."""
    pol = LlmDPredicted(min_samples=3)
    ws = [WorkerState(0, waiting=3, kv_usage=0.5), WorkerState(1, waiting=1)]
    view = view_of(ws, {0: 64})
    want = LlmD().route(prompt(64), view).worker
    for rid in range(3):
        req = prompt(64)
        req.rid = rid
        d = pol.route(req, view)
        assert (d.worker, d.branch) == (want, "warmup")
        pol.on_complete(Feedback(worker=d.worker, rid=rid, ok=True, prompt_units=64, now=1.0,
                                 decision=d, e2e_s=0.5 + 0.1 * rid, ttft_s=0.2 + 0.1 * rid))
    view.now = 5.0
    assert pol.route(prompt(64), view).branch == "predicted"
    snapshot = pol.ttft_coef.copy() if pol.ttft_coef is not None else None
    pol.ttft_model.update(np.ones(9), 9.0)
    view.now = 14.0
    pol.route(prompt(64), view)
    assert np.array_equal(pol.ttft_coef, snapshot)  # 9 s after: still the old snapshot
    view.now = 15.0
    pol.route(prompt(64), view)
    assert not np.array_equal(pol.ttft_coef, snapshot)


def test_learns_ttft_and_tpot_from_feedback() -> None:
    """One completion: the TTFT model moves towards 0.3 s; TPOT (1.3 - 0.3) / (11 - 1)."""
    pol = LlmDPredicted()
    req = prompt(32)
    req.rid, req.max_tokens = 5, 11
    d = pol.route(req, view_of([WorkerState(0)]))
    pol.on_complete(Feedback(worker=0, rid=5, ok=True, prompt_units=32, now=1.0,
                             decision=Decision(d.worker), e2e_s=1.3, ttft_s=0.3))
    x_tpot = np.array([1, 0, 0.032, 0, 0, 0, 0, 0], dtype=np.float64)
    assert pol.tpot_model.predict(x_tpot) == pytest.approx(0.1, abs=1e-3)
    assert pol.ttft_model.samples == 1 and pol.tpot_model.samples == 1


def test_registry_and_bad_parameters() -> None:
    """Registered with an index; bad parameters are refused by name."""
    assert isinstance(make_router_policy("llmd_predicted", seed=3), LlmDPredicted)
    for kwargs in ({"ttft_slo_s": -1.0}, {"forget": 1.5}, {"min_samples": 0}, {"block": 0},
                   {"strategy": "fastest"}, {"retrain_s": 0.0}):
        with pytest.raises(ConfigError, match=next(iter(kwargs))):
            LlmDPredicted(**kwargs)  # type: ignore[arg-type]
