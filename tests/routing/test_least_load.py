"""The ``least_load`` policy: work over learned throughput plus the KV-utilisation term."""

from __future__ import annotations

import math

import pytest

from kvroute.errors import ConfigError
from kvroute.routing.base import Decision, Feedback, WorkerState
from kvroute.routing.least_load import LeastLoad
from kvroute.routing.registry import make_router_policy
from tests.routing.views import prompt, view_of


def done(worker: int, prompt_units: int, e2e_s: float | None, ok: bool = True) -> Feedback:
    return Feedback(worker=worker, rid=0, ok=ok, prompt_units=prompt_units, now=1.0,
                    decision=Decision(worker), e2e_s=e2e_s)


def test_cost_hand_computed_at_the_prior() -> None:
    """(400+2000+1600)/1e4 = .4; 1000/1e4 + .15*1 = .25; 0 + .15*3 = .45: worker 1 at .25 s."""
    ws = [WorkerState(0, prefill_units=2000, decode_units=1600),
          WorkerState(1, kv_usage=0.5),
          WorkerState(2, kv_usage=0.75)]
    view = view_of(ws, {0: 600, 2: 1000})
    policy = LeastLoad()
    assert policy.costs(prompt(1000), view) == pytest.approx([0.4, 0.25, 0.45])
    decision = policy.route(prompt(1000), view)
    assert (decision.worker, decision.branch) == (1, "argmin")
    assert decision.predicted_s == pytest.approx(0.25)


def test_utilisation_term_clamped() -> None:
    """k = 1.0 or 1.2 clamps to .999 (term .15*999 = 149.85); negative k counts as 0."""
    ws = [WorkerState(0, kv_usage=1.0), WorkerState(1, kv_usage=1.2),
          WorkerState(2, kv_usage=-0.3)]
    costs = LeastLoad().costs(prompt(100), view_of(ws))
    assert costs == pytest.approx([0.01 + 149.85, 0.01 + 149.85, 0.01])
    assert LeastLoad(kv_clamp=0.5).costs(prompt(100), view_of(ws)) == \
        pytest.approx([0.16, 0.16, 0.01])


def test_utilisation_outweighs_a_cache_hit() -> None:
    """A full hit on a 90%-full pool (.15*9 = 1.35 s) loses to 5000 uncached units (.5 s)."""
    ws = [WorkerState(0, kv_usage=0.9), WorkerState(1)]
    view = view_of(ws, {0: 5000})
    assert LeastLoad().costs(prompt(5000), view) == pytest.approx([1.35, 0.5])
    assert LeastLoad().route(prompt(5000), view).worker == 1
    assert LeastLoad(kv_penalty_s=0.0).route(prompt(5000), view).worker == 0


def test_ties_go_to_lowest_index() -> None:
    """Identical idle workers: worker 0."""
    ws = [WorkerState(0), WorkerState(1), WorkerState(2)]
    assert LeastLoad().route(prompt(10), view_of(ws)).worker == 0


def test_throughput_learned_by_ewma_from_feedback() -> None:
    """1000 units in .5 s = 2000/s: rate 1e4 -> 9200 -> 8480 with alpha .1; others stay."""
    policy = LeastLoad()
    policy.on_workers_changed(2)
    policy.on_complete(done(0, 1000, 0.5))
    assert policy.rates == pytest.approx([9200.0, 10_000.0])
    policy.on_complete(done(0, 1000, 0.5))
    assert policy.rates == pytest.approx([8480.0, 10_000.0])
    fast = LeastLoad(ewma_alpha=1.0)
    fast.on_complete(done(1, 300, 0.1))
    assert fast.rates == pytest.approx([10_000.0, 3000.0])


def test_failures_and_missing_latency_teach_nothing() -> None:
    """ok=False, e2e None, e2e 0 or nan, or an empty prompt leave the rates at the prior."""
    policy = LeastLoad()
    policy.on_workers_changed(1)
    for fb in (done(0, 1000, None, ok=False), done(0, 1000, None), done(0, 1000, 0.0),
               done(0, 1000, math.nan), done(0, 0, 1.0)):
        policy.on_complete(fb)
    assert policy.rates.tolist() == [10_000.0]


def test_learned_rate_changes_the_decision() -> None:
    """Worker 0 learned 1000/s: 500 units cost .5 s there vs (500+1000)/1e4 = .15 s on 1."""
    ws = [WorkerState(0), WorkerState(1, prefill_units=1000)]
    view = view_of(ws)
    policy = LeastLoad(ewma_alpha=1.0)
    assert policy.route(prompt(500), view).worker == 0
    policy.on_complete(done(0, 1000, 1.0))
    assert policy.costs(prompt(500), view) == pytest.approx([0.5, 0.15])
    decision = policy.route(prompt(500), view)
    assert decision.worker == 1 and decision.predicted_s == pytest.approx(0.15)


def test_rate_floor_and_membership_changes() -> None:
    """The rate never drops below min_tokens_per_s; resizing keeps, drops or adds (at prior)."""
    policy = LeastLoad(ewma_alpha=1.0, min_tokens_per_s=50.0)
    policy.on_complete(done(1, 1, 10.0))  # 0.1/s observed -> floored at 50
    assert policy.rates == pytest.approx([10_000.0, 50.0])
    policy.on_workers_changed(1)
    assert policy.rates.tolist() == [10_000.0]
    policy.on_workers_changed(3)
    assert policy.rates.tolist() == [10_000.0] * 3


@pytest.mark.parametrize("kwargs", [{"kv_penalty_s": -0.1}, {"kv_clamp": 1.0},
                                    {"kv_clamp": -0.5}, {"prior_tokens_per_s": 0.0},
                                    {"ewma_alpha": 0.0}, {"ewma_alpha": 1.5},
                                    {"min_tokens_per_s": math.inf},
                                    {"prior_tokens_per_s": 0.5}])
def test_invalid_parameters_raise_config_error(kwargs: dict[str, object]) -> None:
    """A bad penalty, clamp, prior, smoothing weight or floor is a ConfigError naming it."""
    with pytest.raises(ConfigError, match=next(iter(kwargs))):
        LeastLoad(**kwargs)  # type: ignore[arg-type]


def test_registered_with_index() -> None:
    """The registry builds it by name with parameters, and it asks for a prefix index."""
    policy = make_router_policy("least_load", seed=4, prior_tokens_per_s=5000.0)
    assert isinstance(policy, LeastLoad) and policy.prior_tokens_per_s == 5000.0
    assert LeastLoad.uses_index
