"""benchmarks/router_ab.py: each suite's runs, and the featured traces it writes."""

import numpy as np
import pytest

from kvroute.workloads.mooncake import read_trace
from tests.benchmark_scripts import load


@pytest.fixture(scope="module")
def ab():
    return load("router_ab")


def test_chat_runs_every_seed_at_every_load(ab, tmp_path):
    runs = ab.cases("chat", [1, 2], ["0.5", "0.95"], str(tmp_path))
    assert [label for label, _ in runs] == ["s1 @0.5", "s1 @0.95", "s2 @0.5", "s2 @0.95"]
    argv = runs[1][1]
    assert argv[argv.index("--output-len") + 1] == "200"
    assert argv[argv.index("--load") + 1] == "0.95" and argv[argv.index("--seed") + 1] == "1"


def test_featured_traces_carry_the_public_traces_features(ab, tmp_path):
    runs = ab.cases("featured", [3], ["0.8"], str(tmp_path))
    assert [label for label, _ in runs] == ["conversation 3 @0.8", "mooncake 3 @0.8"]
    plain = read_trace(ab.write_shape("conversation", 3, False, str(tmp_path))).records
    path = runs[0][1][runs[0][1].index("--trace") + 1]
    records = read_trace(path).records
    assert len(records) == len(plain) == ab.SHAPE_REQUESTS
    assert all(r.hash_ids[0] == 0 for r in records)  # one block in front of every prompt
    assert all(r.timestamp % 3000 == 0 for r in records)  # arrivals on a 3-second grid
    first, base = records[0], plain[0]
    assert np.array_equal(first.hash_ids[1:], base.hash_ids + 1)
    assert first.output_length == max(1, round(base.output_length * 2.3))
