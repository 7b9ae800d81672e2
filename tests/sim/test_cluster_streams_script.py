"""benchmarks/cluster_streams.py: a recorded cluster's streams, replayed through the
policy that ran, hit exactly what the run hit, admission by admission; each worker's
offline optimum of its stream hits more."""

import pytest

from kvroute.sim.cluster import SimConfig
from kvroute.workloads.mooncake import write_mooncake
from kvroute.workloads.mooncake_synth import MOONCAKE_SYNTHETIC, synth_records
from tests.benchmark_scripts import load


@pytest.fixture(scope="module")
def cs():
    return load("cluster_streams")


@pytest.fixture(scope="module")
def trace(tmp_path_factory):
    path = tmp_path_factory.mktemp("trace") / "t.jsonl"
    write_mooncake(path, synth_records(300, MOONCAKE_SYNTHETIC, seed=2))
    return str(path)


@pytest.mark.parametrize("eviction", ["rlt", "learned", "lru"])
def test_the_recorded_policy_replays_the_runs_hits(cs, trace, eviction):
    cfg = SimConfig(workers=2, eviction=eviction, routing="learned", seed=3)
    streams = cs.record(trace, 0.95, cfg, None)
    kinds = {kind for ops in streams.ops.values() for kind, *_ in ops}
    assert {cs.ADMIT, cs.PROMPT, cs.FINISH} <= kinds and len(streams.cached) == 300
    rate, same = cs.hit_rate(streams, eviction)
    assert same and 0 < rate < 1
    assert cs.hit_rate(streams, "optimal")[0] > rate  # each worker's offline optimum
    streams.seed += 1  # the workers' caches seeded otherwise: rlt draws other victims
    if eviction == "rlt":
        assert not cs.hit_rate(streams, eviction)[1]
