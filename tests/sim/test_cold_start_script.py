"""benchmarks/cold_start.py: the first N requests of GSP, simulated from cold caches."""

import itertools

from tests.benchmark_scripts import load


def test_the_first_requests_are_the_streams_first_in_order_and_run() -> None:
    cold = load("cold_start")
    reqs = list(cold.first_requests(8, 12.0, 1))
    assert [r.rid for r in reqs] == list(range(8))
    assert all(a.arrival <= b.arrival for a, b in itertools.pairwise(reqs))
    ttft, e2e = cold.run(8, "round_robin", 12.0, 1)
    assert 0 < ttft < e2e
