"""benchmarks/router_random_grid.py: its draws and the traces it writes."""

from dataclasses import replace

import pytest

from kvroute.workloads.catalog import build_workload
from kvroute.workloads.chat import ChatConfig
from kvroute.workloads.mooncake import read_trace
from kvroute.workloads.mooncake_synth import SHAPES, synth_records
from tests.benchmark_scripts import load


@pytest.fixture(scope="module")
def grid():
    return load("router_random_grid")


def test_a_draw_is_the_same_configuration_every_time(grid):
    assert grid.draw(7) == grid.draw(7)
    assert grid.draw(7) != grid.draw(8)


def test_every_draw_is_within_its_ranges_and_a_valid_workload(grid):
    seen = set()
    for n in range(1, 61):
        cfg = grid.draw(n)
        seen.add(cfg["workload"])
        assert cfg["workers"] in (2, 4, 8, 16) and 0.3 <= cfg["load"] <= 1.0
        opts = cfg["options"]
        if cfg["workload"] == "trace":
            assert 800 <= cfg["requests"] <= 1500 and 0 <= cfg["reuse"] <= 0.95
            continue
        assert 1 <= opts["output_len"] <= 512
        if cfg["workload"] == "gsp":
            requests = opts["groups"] * opts["prompts_per_group"]
        elif cfg["workload"] == "loogle":
            requests = opts["documents"] * opts["questions_per_doc"]
        else:
            chat = ChatConfig(**opts)
            requests = sum(chat.turns_of(c) for c in range(chat.clients))
        # the bounds hold for the mean over the turn lengths; a client's count cycles them
        assert grid.MIN_REQUESTS * 0.9 <= requests <= grid.MAX_REQUESTS * 1.1, (n, cfg)
    assert seen == {"gsp", "loogle", "sharegpt", "trace"}


@pytest.mark.parametrize("workload", ["gsp", "loogle", "sharegpt"])
def test_the_options_of_a_draw_build_its_workload(grid, workload):
    n = next(n for n in range(1, 61) if grid.draw(n)["workload"] == workload)
    cfg = grid.draw(n)
    opts = dict(cfg["options"])
    if "order" in cfg:
        opts["order"] = cfg["order"]
    assert len(list(build_workload(workload, 1, **opts))) > 0


def test_a_trace_draw_writes_its_requests_with_scaled_outputs(grid, tmp_path):
    n = next(n for n in range(1, 61) if grid.draw(n)["workload"] == "trace")
    cfg = grid.draw(n)
    path = tmp_path / "trace.jsonl"
    grid._trace(cfg, n, str(path))
    records = read_trace(str(path)).records
    stats = replace(SHAPES[cfg["shape"]], reuse=cfg["reuse"])
    model = list(synth_records(cfg["requests"], stats, n))
    assert len(records) == len(model) == cfg["requests"]
    assert [r.output_length for r in records] == [
        max(1, round(m.output_length * cfg["output_scale"])) for m in model]
    assert [r.input_length for r in records] == [m.input_length for m in model]
