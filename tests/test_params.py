"""kvroute.params: the one check for policies' numeric and true/false parameters."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kvroute.errors import ConfigError
from kvroute.params import flag, integer, number


@pytest.mark.parametrize("value", [0, 3, 0.5, 2.5, np.float64(0.25), np.float32(0.5),
                                   np.int64(2), np.int32(1)])
def test_number_accepts_real_numbers_and_returns_a_float(value: object) -> None:
    out = number("p", "x", value, low=0.0)
    assert type(out) is float and out == float(value)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [True, False, np.bool_(True), "1", None, [1.0], 1 + 0j,
                                   math.nan, math.inf, -math.inf, np.float64("nan")])
def test_number_rejects_non_numbers_bools_and_non_finite(value: object) -> None:
    with pytest.raises(ConfigError, match=r"^p: x must be a finite number, got "):
        number("p", "x", value)


@pytest.mark.parametrize(("kwargs", "ok", "bad", "range_"), [
    ({"low": 0.0}, [0.0, 1e300], [-1e-12], ">= 0"),
    ({"low": 0.0, "low_open": True}, [1e-300, 5], [0, -1], "> 0"),
    ({"high": 1.0}, [1.0, -1e300], [1.0000001], "<= 1"),
    ({"high": 1.0, "high_open": True}, [0.999], [1.0], "< 1"),
    ({"low": 0.0, "high": 1.0}, [0, 1, 0.5], [-0.1, 1.1], "in [0, 1]"),
    ({"low": 0.0, "high": 1.0, "low_open": True}, [1, 1e-9], [0.0, 1.5], "in (0, 1]"),
    ({"low": 0.0, "high": 1.0, "high_open": True}, [0, 0.5], [1, -0.5], "in [0, 1)"),
    ({"low": 0.0, "high": 1.0, "low_open": True, "high_open": True}, [0.5], [0, 1],
     "in (0, 1)"),
    ({"low": 1.5, "high": 2e6}, [1.5, 2e6], [1.4, 2e6 + 1], "in [1.5, 2e+06]"),
])
def test_number_bounds_open_and_closed(kwargs: dict[str, object], ok: list[float],
                                       bad: list[float], range_: str) -> None:
    for value in ok:
        assert number("p", "x", value, **kwargs) == value  # type: ignore[arg-type]
    for value in bad:
        with pytest.raises(ConfigError) as err:
            number("p", "x", value, **kwargs)  # type: ignore[arg-type]
        assert str(err.value) == f"p: x must be a finite number {range_}, got {value!r}"


def test_number_messages_pinned() -> None:
    with pytest.raises(ConfigError) as err:
        number("dynamo", "temperature", -0.1, low=0.0)
    assert str(err.value) == "dynamo: temperature must be a finite number >= 0, got -0.1"
    with pytest.raises(ConfigError) as err:
        number("lbgr", "decay_period", math.inf, low=0.0, low_open=True, hint="(seconds)")
    assert str(err.value) == "lbgr: decay_period must be a finite number > 0 (seconds), got inf"
    with pytest.raises(ConfigError) as err:
        number("least_load", "kv_clamp", True, low=0.0, high=1.0, high_open=True)
    assert str(err.value) == "least_load: kv_clamp must be a finite number in [0, 1), got True"


@pytest.mark.parametrize("value", [0, 7, np.int64(3), np.uint8(1)])
def test_integer_accepts_ints_and_numpy_integers(value: object) -> None:
    out = integer("p", "n", value)
    assert type(out) is int and out == int(value)  # type: ignore[call-overload]


@pytest.mark.parametrize("value", [True, False, 1.0, 2.5, np.float64(2.0), "3", None, -1,
                                   math.nan])
def test_integer_rejects_bools_floats_strings_and_below_low(value: object) -> None:
    with pytest.raises(ConfigError, match=r"^p: n must be an integer >= 0, got "):
        integer("p", "n", value)


def test_integer_bounds_and_messages_pinned() -> None:
    assert integer("p", "n", 1, low=1) == 1
    assert integer("p", "n", 8, low=1, high=8) == 8
    with pytest.raises(ConfigError) as err:
        integer("llmd", "block", 0, low=1, hint="(units per KV block; 16 by default)")
    assert str(err.value) == ("llmd: block must be an integer >= 1 (units per KV block; "
                              "16 by default), got 0")
    with pytest.raises(ConfigError) as err:
        integer("p", "n", 9, low=1, high=8)
    assert str(err.value) == "p: n must be an integer in [1, 8], got 9"


def test_flag() -> None:
    assert flag("p", "f", True) is True and flag("p", "f", False) is False
    for value in (1, 0, "true", None, np.bool_(True)):
        with pytest.raises(ConfigError) as err:
            flag("dynamo", "lmetric", value)
        assert str(err.value) == f"dynamo: lmetric must be true or false, got {value!r}"


@pytest.mark.parametrize(("kind", "name", "args"), [
    # values the hand-written checks these replaced let through
    ("routing", "cache_aware", {"cache_threshold": True}),
    ("routing", "cache_aware_v2", {"cache_threshold": False}),
    ("routing", "lbgr", {"tolerance": math.nan}),
    ("routing", "lbgr", {"decay_period": math.inf}),
    ("routing", "lbgr", {"p0": True}),
    ("eviction", "learned", {"trust": math.inf}),
    ("eviction", "learned", {"memory": True}),
    ("eviction", "sae", {"hit_weight": math.nan}),
    ("eviction", "sae", {"depth_weight": math.inf}),
])
def test_policies_refuse_what_the_old_checks_let_through(kind: str, name: str,
                                                         args: dict[str, object]) -> None:
    from kvroute.cache.eviction.registry import make_policy
    from kvroute.routing.registry import make_router_policy

    make = make_router_policy if kind == "routing" else make_policy
    with pytest.raises(ConfigError, match=f"{name}: {next(iter(args))} must be"):
        make(name, args)


def test_policies_take_numpy_scalars() -> None:
    from kvroute.routing.registry import make_router_policy

    pol = make_router_policy("dynamo", {"block": np.int64(32), "temperature": np.float32(0.5)})
    assert pol.block == 32 and type(pol.block) is int  # type: ignore[attr-defined]
    assert pol.temperature == 0.5 and type(pol.temperature) is float  # type: ignore[attr-defined]
