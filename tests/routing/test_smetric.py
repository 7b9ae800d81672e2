"""smetric (the vLLM router): linear + attention prefill work, a learned p90 rate per worker,
the longest hit while it meets the TTFT SLO, else the least queued work."""

from __future__ import annotations

import pytest

from kvroute.errors import ConfigError
from kvroute.routing.base import Decision, Feedback, WorkerState
from kvroute.routing.registry import make_router_policy
from kvroute.routing.smetric import SMetric
from tests.routing.views import prompt, view_of


def done(pol: SMetric, rid: int, worker: int, ttft: float, cached: int | None) -> None:
    pol.on_complete(Feedback(worker=worker, rid=rid, ok=True, prompt_units=0, now=1.0,
                             decision=Decision(worker), e2e_s=ttft + 1.0, ttft_s=ttft,
                             cached_tokens=cached))


def test_work_formula() -> None:
    """c_lin n + c_att n (L - n/2): 10 new units at the end of 20 with c_att 0.01 -> 11.5."""
    assert float(SMetric(c_att=0.01).work(10, 20.0)) == pytest.approx(11.5)


def test_hit_within_the_slo_else_least_queued_work() -> None:
    """Rate 0.01 s per unit. A (100 units) goes to w0 (both idle: lowest index). B (20 units,
    16 cached on w0): w0's TTFT 0.01 x (100 queued + 4) = 1.04 s > 1 s -> least work, w1
    (0.2 s); with a 2 s SLO it stays on w0."""
    for slo, want in ((1.0, (1, "least_work", 0.2)), (2.0, (0, "hit", 1.04))):
        pol = SMetric(c_att=0.0, prior_s_per_work=0.01, ttft_slo_s=slo)
        ws = [WorkerState(0), WorkerState(1)]
        a = prompt(100)
        a.rid = 1
        assert pol.route(a, view_of(ws)).worker == 0
        ws[0].prefill_units = 100  # as the router counts it
        b = prompt(20)
        b.rid = 2
        d = pol.route(b, view_of(ws, {0: 16}))
        assert (d.worker, d.branch) == want[:2]
        assert d.predicted_s == pytest.approx(want[2])


def test_hit_must_exceed_half_the_prompt() -> None:
    """10 of 20 cached (exactly 0.5) is not a hit: the least queued worker, w0 (a tie)."""
    pol = SMetric()
    ws = [WorkerState(0), WorkerState(1)]
    d = pol.route(prompt(20), view_of(ws, {1: 10}))
    assert (d.worker, d.branch) == (0, "least_work")
    d = SMetric().route(prompt(20), view_of(ws, {1: 11}))
    assert (d.worker, d.branch) == (1, "hit")


def test_rate_is_learned_from_ttft_and_cached_tokens() -> None:
    """A: 100 units on w0, engine cached 50 -> work 50, TTFT 2 s -> 0.04 s per unit on w0,
    and on w1 too (the pooled p90 until it has samples of its own)."""
    pol = SMetric(c_att=0.0)
    a = prompt(100)
    a.rid = 7
    pol.route(a, view_of([WorkerState(0), WorkerState(1)]))
    done(pol, 7, 0, 2.0, 50)
    assert pol.rates(2) == pytest.approx([0.04, 0.04])
    assert pol.open_work[0] == 0 and pol.open_units[0] == 0


def test_p90_over_the_window() -> None:
    """window 4, samples 0.01..0.05 on w0: the last four, p90 = 0.02 + 0.9 x 3 x 0.01."""
    pol = SMetric(c_att=0.0, window=4)
    for i, ttft in enumerate([1.0, 2.0, 3.0, 4.0, 5.0]):
        req = prompt(100)
        req.rid = i
        pol.route(req, view_of([WorkerState(0)]))
        done(pol, i, 0, ttft, 0)
    assert pol.rates(1)[0] == pytest.approx(0.047)


def test_registry_and_bad_parameters() -> None:
    """Registered with an index; bad parameters are refused by name."""
    assert isinstance(make_router_policy("smetric"), SMetric) and SMetric.uses_index
    for kwargs in ({"window": 0}, {"quantile": 1.5}, {"ttft_slo_s": 0.0}, {"c_att": -1.0}):
        with pytest.raises(ConfigError, match=next(iter(kwargs))):
            SMetric(**kwargs)  # type: ignore[arg-type]
