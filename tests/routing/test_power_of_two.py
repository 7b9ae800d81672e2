"""power_of_two: the less loaded of two distinct, seeded uniform draws."""

from __future__ import annotations

import numpy as np

from kvroute.routing.base import ClusterView, RouteRequest, WorkerState
from kvroute.routing.power_of_two import PowerOfTwo

REQ = RouteRequest(np.array([1, 2, 3]))


def view(loads: list[int]) -> ClusterView:
    return ClusterView([WorkerState(i, in_flight=x) for i, x in enumerate(loads)], None)


def test_single_worker() -> None:
    """With one worker, that worker, whatever its load."""
    d = PowerOfTwo().route(REQ, view([9]))
    assert (d.worker, d.branch) == (0, "single")


def test_never_picks_the_more_loaded_of_its_pair() -> None:
    """Replaying the seeded draws: the choice is in the pair, never the heavier, ties first."""
    loads = [3, 0, 3, 1, 2, 0]
    pol, twin = PowerOfTwo(seed=7), np.random.default_rng(7)
    v = view(loads)
    for _ in range(500):
        a, b = (int(x) for x in twin.choice(len(loads), size=2, replace=False))
        assert a != b
        d = pol.route(REQ, v)
        if loads[a] == loads[b]:
            assert (d.worker, d.branch) == (a, "tie")
        else:
            assert d.worker == (a if loads[a] < loads[b] else b) and d.branch == "lighter"


def test_distribution_over_distinct_loads() -> None:
    """Loads [0, 1, 2, 3]: worker i wins its pair with prob (3 - i)/6 -> 1/2, 1/3, 1/6, 0."""
    pol, v = PowerOfTwo(seed=1), view([0, 1, 2, 3])
    counts = np.bincount([pol.route(REQ, v).worker for _ in range(6000)], minlength=4) / 6000
    assert counts[3] == 0
    assert np.allclose(counts, [1 / 2, 1 / 3, 1 / 6, 0], atol=0.025)


def test_equal_loads_are_uniform() -> None:
    """All loads equal: the first draw wins, so each of 4 workers gets about a quarter."""
    pol, v = PowerOfTwo(seed=2), view([5, 5, 5, 5])
    counts = np.bincount([pol.route(REQ, v).worker for _ in range(4000)], minlength=4) / 4000
    assert np.allclose(counts, 0.25, atol=0.03)


def test_seeded() -> None:
    """The same seed repeats the same choices; another seed gives different ones."""
    v = view([0, 0, 0, 0, 0, 0, 0, 0])

    def run(seed: int) -> list[int]:
        pol = PowerOfTwo(seed=seed)
        return [pol.route(REQ, v).worker for _ in range(50)]

    assert run(3) == run(3)
    assert run(3) != run(4)
