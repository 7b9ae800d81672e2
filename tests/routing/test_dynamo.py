"""The ``dynamo`` policy: block cost arithmetic, argmin at temperature 0, softmax above."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kvroute.errors import ConfigError
from kvroute.routing.base import ClusterView, WorkerState
from kvroute.routing.dynamo import Dynamo
from kvroute.routing.registry import make_router_policy
from tests.routing.views import prompt, view_of


class _OverlongIndex:
    """An index that reports more matched units than the prompt has (for the clamp)."""

    def __init__(self, matched: list[int]) -> None:
        self._matched = np.array(matched, dtype=np.int64)

    def match(self, units: np.ndarray, now: float, adapter: str | None = None) -> np.ndarray:
        return self._matched


def test_cost_arithmetic_hand_computed() -> None:
    """cost = prefill/16 + ceil(P/16) - overlap + decode/16 + ceil(P/16): [11, 8, 15] -> 1."""
    ws = [WorkerState(0, prefill_units=32, decode_units=48),
          WorkerState(1),
          WorkerState(2, prefill_units=16, decode_units=160)]
    view = view_of(ws, {0: 40, 2: 64})  # overlaps: 40//16 = 2 blocks, 0, 64//16 = 4 blocks
    policy = Dynamo()
    req = prompt(64)
    assert policy.costs(req, view) == pytest.approx([11.0, 8.0, 15.0])
    decision = policy.route(req, view)
    assert (decision.worker, decision.branch, decision.predicted_s) == (1, "argmin", None)


def test_overlap_counts_whole_blocks_only() -> None:
    """A 20-unit prompt is 2 blocks; fully cached it holds 1 whole block: 2 - 1 + 2 = 3."""
    view = view_of([WorkerState(0), WorkerState(1)], {0: 20})
    assert Dynamo().costs(prompt(20), view) == pytest.approx([3.0, 4.0])


def test_prefill_term_clamped_at_zero() -> None:
    """max(0, ...): an overlap beyond the prompt leaves decode + own blocks, never less."""
    ws = [WorkerState(0, decode_units=32), WorkerState(1, decode_units=16)]
    view = ClusterView(ws, _OverlongIndex([160, 0]))  # type: ignore[arg-type]
    # worker 0: max(0, 2 - 10) = 0 (unclamped: -8) + 2 + 2; worker 1: 2 + 1 + 2
    assert Dynamo().costs(prompt(32), view) == pytest.approx([4.0, 5.0])
    assert Dynamo().route(prompt(32), view).worker == 0


def test_full_hit_without_active_prefill_costs_decode_only() -> None:
    """A fully cached block-aligned prompt on an idle-prefill worker adds 0 prefill blocks
    (3 own blocks still count on every worker)."""
    ws = [WorkerState(0, decode_units=64), WorkerState(1)]
    view = view_of(ws, {0: 48})
    assert Dynamo().costs(prompt(48), view) == pytest.approx([7.0, 6.0])
    assert Dynamo(prefill_scale=2.0).costs(prompt(48), view) == pytest.approx([7.0, 9.0])


def test_request_weight_and_block_parameters() -> None:
    """w * in_flight is added; block=512 (Mooncake) divides by 512 instead of 16."""
    ws = [WorkerState(0, in_flight=3), WorkerState(1)]
    view = view_of(ws)
    assert Dynamo(request_weight=0.5).costs(prompt(32), view) == pytest.approx([5.5, 4.0])
    assert Dynamo(block=512).costs(prompt(1024), view) == pytest.approx([4.0, 4.0])


def test_temperature_zero_ties_go_to_lowest_index() -> None:
    """Equal costs at temperature 0: the lowest index wins, every time."""
    ws = [WorkerState(0, decode_units=16), WorkerState(1), WorkerState(2)]
    policy = Dynamo()
    assert {policy.route(prompt(16), view_of(ws)).worker for _ in range(20)} == {1}


def test_softmax_probabilities_hand_computed() -> None:
    """Costs [0, 5, 10] normalise to [0, .5, 1]; at T=0.5 p ∝ [1, e^-1, e^-2]."""
    p = Dynamo(temperature=0.5).probabilities(np.array([0.0, 5.0, 10.0]))
    z = 1 + math.exp(-1) + math.exp(-2)
    assert p == pytest.approx([1 / z, math.exp(-1) / z, math.exp(-2) / z])
    assert Dynamo(temperature=1.0).probabilities(np.array([3.0, 3.0])) == pytest.approx([.5, .5])


def test_softmax_sampling_favours_low_cost() -> None:
    """At T=0.5 seeded draws follow [.665, .245, .090] within 0.02 and rank low cost first."""
    ws = [WorkerState(0), WorkerState(1, decode_units=40), WorkerState(2, decode_units=80)]
    view = view_of(ws)  # costs 1, 3.5, 6 -> normalised 0, .5, 1
    policy = Dynamo(seed=7, temperature=0.5)
    draws = [policy.route(prompt(16), view) for _ in range(20_000)]
    assert {d.branch for d in draws} == {"softmax"}
    freq = np.bincount([d.worker for d in draws], minlength=3) / len(draws)
    z = 1 + math.exp(-1) + math.exp(-2)
    assert freq == pytest.approx([1 / z, math.exp(-1) / z, math.exp(-2) / z], abs=0.02)
    assert freq[0] > freq[1] > freq[2]


def test_softmax_is_seeded_and_temperature_controls_spread() -> None:
    """Same seed, same draws; a tiny T is nearly argmin, a huge T nearly uniform."""
    ws = [WorkerState(0), WorkerState(1, decode_units=160)]
    view = view_of(ws)
    runs = []
    for _ in range(2):
        policy = Dynamo(seed=3, temperature=1.0)
        runs.append([policy.route(prompt(16), view).worker for _ in range(200)])
    assert runs[0] == runs[1]
    cold = Dynamo(seed=1, temperature=0.01)
    assert sum(cold.route(prompt(16), view).worker for _ in range(2000)) == 0
    hot = Dynamo(seed=1, temperature=1000.0)
    share = sum(hot.route(prompt(16), view).worker for _ in range(4000)) / 4000
    assert share == pytest.approx(0.5, abs=0.03)


def test_lmetric_option_hand_computed() -> None:
    """lmetric=True: adjusted prefill x (decode blocks + 1): [4 x 4, 4 x 1, 0 x 11] -> 2."""
    ws = [WorkerState(0, prefill_units=32, decode_units=48),
          WorkerState(1),
          WorkerState(2, prefill_units=0, decode_units=160)]
    view = view_of(ws, {0: 40, 2: 64})  # overlaps 2, 0, 4 blocks; P = 64: 4 own blocks
    policy = Dynamo(lmetric=True)
    assert policy.costs(prompt(64), view) == pytest.approx([16.0, 4.0, 0.0])
    assert policy.route(prompt(64), view).worker == 2


def test_same_decisions_as_the_2025_cost() -> None:
    """The 2025 cost (no own blocks, P/b unrounded) differs by a per-request constant:
    the same argmin and the same normalised costs in 500 random states."""
    rng = np.random.default_rng(5)
    for _ in range(500):
        n = int(rng.integers(2, 6))
        ws = [WorkerState(i, prefill_units=int(rng.integers(0, 400)),
                          decode_units=int(rng.integers(0, 400))) for i in range(n)]
        plen = int(rng.integers(1, 100))
        cached = {i: int(rng.integers(0, plen + 1)) for i in range(n)}
        view = view_of(ws, cached)
        req = prompt(plen)
        new = Dynamo(prefill_scale=1.5).costs(req, view)
        overlap = np.array([cached[i] // 16 for i in range(n)], dtype=np.float64)
        old = np.array([1.5 * max(0.0, (w.prefill_units + plen) / 16 - overlap[w.index])
                        + w.decode_units / 16 for w in ws])
        assert new - old == pytest.approx(np.full(n, (new - old)[0]))


@pytest.mark.parametrize("kwargs", [{"block": 0}, {"block": 1.5}, {"block": True},
                                    {"temperature": -0.1}, {"prefill_scale": math.nan},
                                    {"request_weight": -1.0}, {"prefill_scale": "1"},
                                    {"lmetric": 1}])
def test_invalid_parameters_raise_config_error(kwargs: dict[str, object]) -> None:
    """Bad block, temperature, scale or weight is a ConfigError naming the parameter."""
    with pytest.raises(ConfigError, match=next(iter(kwargs))):
        Dynamo(**kwargs)  # type: ignore[arg-type]


def test_registered_with_index() -> None:
    """The registry builds it by name, and it asks the router for a prefix index."""
    policy = make_router_policy("dynamo", seed=2, block=512)
    assert isinstance(policy, Dynamo) and policy.block == 512 and Dynamo.uses_index
