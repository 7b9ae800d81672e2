"""Load as utilisation: offered work by hand, the rate it implies, chat's open loop."""

from __future__ import annotations

import numpy as np
import pytest

from kvroute.errors import ConfigError
from kvroute.sim.load import (
    ABOVE_ONE,
    arrival_line,
    build_at_load,
    offered_work_s,
    rate_for_load,
    rate_line,
)
from kvroute.sim.step_model import StepModel
from kvroute.workloads.request import OpenLoop, Request

FLOOR = StepModel("floor", t_w_ms=10.0, t0_ms=0.0, b_ms=0.01, c_ms=0.0, g_ms=0.0,
                  kv_pool_tokens=1000)


def test_offered_work_by_hand() -> None:
    """100-token prompt in chunks of 64 + 36: two floor steps, 20 ms; 2 decode tokens in a
    batch of 1000 // 103 = 9: 10 / 9 ms each. Total 22.222 ms."""
    assert offered_work_s(FLOOR, 100, 3, 64) == pytest.approx(0.02 + 2 * 0.01 / 9)


def test_pairs_are_priced_per_chunk() -> None:
    model = StepModel("pairs", t_w_ms=0.0, t0_ms=0.0, b_ms=0.0, c_ms=1e-3, g_ms=0.0,
                      kv_pool_tokens=1000)
    # chunks 4 on 0 and 2 on 4: pairs 4*2 + 2*5 = 18 -> 0.018 ms
    assert offered_work_s(model, 6, 1, 4) == pytest.approx(18e-6)


def test_rate_for_load() -> None:
    reqs = [Request(i, np.arange(100), 3, arrival=float(i)) for i in range(2)]
    wl = OpenLoop.of("two", reqs)
    assert rate_for_load(wl, FLOOR, 4, 0.5, 64) == pytest.approx(0.5 * 4 / (0.02 + 0.02 / 9))
    with pytest.raises(ConfigError):
        rate_for_load(wl, FLOOR, 4, 0.0, 64)


def test_build_at_load_turns_chat_open_and_keeps_prompts() -> None:
    wl, rate = build_at_load("sharegpt", 1, 0.5, FLOOR.replace(kv_pool_tokens=100_000), 2,
                             8192, clients=4)
    assert isinstance(wl, OpenLoop) and rate > 0
    again, rate2 = build_at_load("sharegpt", 1, 1.0, FLOOR.replace(kv_pool_tokens=100_000), 2,
                                 8192, clients=4)
    assert rate2 == pytest.approx(2 * rate)
    assert [len(r.tokens) for r in wl] == [len(r.tokens) for r in again]
    with pytest.raises(ConfigError):
        build_at_load("sharegpt", 1, 0.5, FLOOR, 2, 8192, clients=4, mode="closed")
    with pytest.raises(ConfigError):
        build_at_load("gsp", 1, 0.5, FLOOR, 2, 8192, groups=2, rate=3.0)


def test_a_mixed_fleet_offers_the_sum_of_its_speeds() -> None:
    """Two workers at speeds 1 and 0.5 have the capacity of 1.5 workers of the profile."""
    reqs = [Request(i, np.arange(100), 3, arrival=float(i)) for i in range(2)]
    wl = OpenLoop.of("two", reqs)
    assert rate_for_load(wl, FLOOR, 1.5, 0.5, 64) == pytest.approx(
        rate_for_load(wl, FLOOR, 3, 0.5, 64) / 2)


def test_a_load_above_one_says_what_its_numbers_mean() -> None:
    assert rate_line(0.95, 12.5) == "load 0.95: 12.500 requests/s"
    line = rate_line(1.3, 18.0)
    assert line.startswith("load 1.3: 18.000 requests/s (") and ABOVE_ONE in line


def test_sim_prints_it(capsys) -> None:
    from kvroute.cli import main

    assert main(["sim", "--groups", "2", "--prompts-per-group", "2", "--eviction", "lru",
                 "--routing", "round_robin", "--no-ceilings", "--load", "1.2"]) == 0
    assert ABOVE_ONE in capsys.readouterr().out.replace("\n", " ")


def test_arrivals_as_given_show_the_load_they_offer() -> None:
    """Three requests of 22.222 ms of work each (above) one every 2 s on one worker: 0.5
    requests/s against a capacity of 45 requests/s, a load of 0.5 / 45 = 0.0111."""
    reqs = [Request(i, np.arange(100), 3, arrival=2.0 * i) for i in range(3)]
    line = arrival_line(OpenLoop.of("three", reqs), FLOOR, 1, 64)
    assert line == ("arrivals as given: 3 requests over 4.0 s, 0.500 requests/s: "
                    f"offered load {0.5 * (0.02 + 0.02 / 9):.3g}")
    # the same requests 1000 times closer (a clock in seconds read as milliseconds)
    fast = [Request(i, np.arange(100), 3, arrival=0.002 * i) for i in range(3)]
    line = arrival_line(OpenLoop.of("three", fast), FLOOR, 1, 64, hint="see --time-scale")
    assert "over 0.004 s, 500.000 requests/s: offered load 11.1 (" in line
    assert ABOVE_ONE in line and line.endswith("; see --time-scale)")
    once = [Request(i, np.arange(100), 3, arrival=1.0) for i in range(3)]
    assert arrival_line(OpenLoop.of("once", once), FLOOR, 1, 64).endswith("(all at once)")


def test_sim_prints_the_load_of_a_given_rate(capsys) -> None:
    from kvroute.cli import main

    assert main(["sim", "--groups", "2", "--prompts-per-group", "2", "--eviction", "lru",
                 "--routing", "round_robin", "--no-ceilings", "--rate", "0.5"]) == 0
    out = capsys.readouterr().out.replace("\n", " ")
    assert "arrivals as given: 4 requests over " in out and "offered load" in out
