"""Tests of the step-time model, its profiles and the fitter."""

from __future__ import annotations

import json
import math
from importlib import resources
from pathlib import Path

import pytest

from kvroute.errors import ConfigError, UnknownNameError
from kvroute.sim.step_fit import fit_step_model
from kvroute.sim.step_model import COEFFICIENT_KEYS, StepModel, parse_overrides, prefill_pairs
from kvroute.sim.step_profiles import (
    DEFAULT_PROFILE,
    PROFILE_KINDS,
    load_profile,
    profile_names,
    profile_record,
)

EXPECTED_PROFILES = {
    "l40-llama3-8b",
    "a100-llama3-8b",
    "h100-llama3-8b",
    "h200-llama3-8b",
    "paper-linear",
    "h100-llama3-8b-measured",
}


def _model(**kw: float) -> StepModel:
    base = dict(t_w_ms=10.0, t0_ms=2.0, b_ms=0.1, c_ms=1e-4, g_ms=1e-3, kv_pool_tokens=1000)
    base.update(kw)
    return StepModel(name="hand", **base)  # type: ignore[arg-type]


def _profile_json(name: str) -> dict:
    text = resources.files("kvroute").joinpath("profiles", name + ".json").read_text("utf-8")
    return json.loads(text)


def test_step_time_floor_regime() -> None:
    """Below the knee the linear part is the floor T_w, and the result is in seconds."""
    m = _model()
    # N=10: compute line 2 + 1 = 3 ms < T_w = 10 ms
    assert m.step_time(10, 0.0, 0) == pytest.approx(0.010)


def test_step_time_compute_regime() -> None:
    """Above the knee the linear part is T0 + b*N."""
    m = _model()
    # N=200: 2 + 20 = 22 ms > 10 ms
    assert m.step_time(200, 0.0, 0) == pytest.approx(0.022)
    assert m.knee_tokens == pytest.approx(80.0)
    assert m.step_time(80, 0.0, 0) == pytest.approx(0.010)


def test_step_time_attention_terms_and_overhead() -> None:
    """c prices prefill pairs, g decode context, overhead adds per step."""
    m = _model(overhead_ms=0.5)
    pairs = prefill_pairs(100, 50)  # 100 * (50 + 50) = 10,000
    assert pairs == 10_000
    # N = 100 + 2 decodes = 102 -> 2 + 10.2 = 12.2; c*pairs = 1.0; g*ctx = 1e-3*3000 = 3.0
    assert m.step_time(102, pairs, 3000) == pytest.approx((12.2 + 1.0 + 3.0 + 0.5) / 1000)


def test_validation_rejects_negative_and_bad_pool() -> None:
    """Negative, non-finite coefficients and a pool < 1 raise ConfigError."""
    with pytest.raises(ConfigError, match="b_ms"):
        _model(b_ms=-1.0)
    with pytest.raises(ConfigError, match="t_w_ms"):
        _model(t_w_ms=math.nan)
    with pytest.raises(ConfigError, match="kv_pool_tokens"):
        _model(kv_pool_tokens=0)
    with pytest.raises(ConfigError, match="kv_pool_tokens"):
        _model(kv_pool_tokens=1.5)


def test_shipped_profiles_load_and_are_valid() -> None:
    """Every shipped profile loads, has the schema fields, and its name matches its file."""
    names = profile_names()
    assert set(names) == EXPECTED_PROFILES
    assert names == sorted(names)
    assert DEFAULT_PROFILE in names
    for name in names:
        m = load_profile(name)
        assert m.name == name
        data = _profile_json(name)
        for key in ("name", "gpu", "model", "date", "kind", "source", "notes", "coefficients"):
            assert key in data, (name, key)
        assert data["kind"] in PROFILE_KINDS
        assert set(COEFFICIENT_KEYS) <= set(data["coefficients"])
        assert m.source
        # a decode step of 32 sequences at 1k context takes 1 to 100 ms
        assert 1e-3 < m.step_time(32, 0.0, 32 * 1024) < 0.1
        # a 2048-token prefill costs more than a 1-token decode
        assert m.step_time(2048, prefill_pairs(2048, 0), 0) > m.step_time(1, 0.0, 1024)


def test_default_profile_matches_paper_testbed() -> None:
    """The default (L40) and paper-linear profiles hold the paper's 2x10^5-token KV pool."""
    assert load_profile(DEFAULT_PROFILE).kv_pool_tokens == 200_000
    paper = load_profile("paper-linear")
    assert paper.kv_pool_tokens == 200_000
    assert paper.c_ms == paper.g_ms == paper.t_w_ms == 0.0
    assert paper.b_ms == load_profile("l40-llama3-8b").b_ms


def test_load_by_path(tmp_path: Path) -> None:
    """A profile JSON file outside the package loads by path."""
    record = profile_record(
        _model(), gpu="test", model_name="toy", date="2026-01-01", kind="measured"
    )
    record["name"] = "mine"
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(record))
    m = load_profile(str(path))
    assert m.name == "mine"
    assert m.replace(name="hand") == _model()


def test_unknown_name_lists_valid_names() -> None:
    """An unknown name raises UnknownNameError naming every shipped profile."""
    with pytest.raises(UnknownNameError) as info:
        load_profile("tpu-llama3-8b")
    for name in EXPECTED_PROFILES:
        assert name in str(info.value)


def test_missing_file_and_bad_json(tmp_path: Path) -> None:
    """A missing path, invalid JSON and missing coefficient keys give friendly ConfigErrors."""
    with pytest.raises(ConfigError, match="does not exist"):
        load_profile(str(tmp_path / "nope.json"))
    with pytest.raises(ConfigError, match="is a directory"):  # it said 'does not exist'
        load_profile(str(tmp_path))
    bad = tmp_path / "bad.json"
    bad.write_text('{"name": "x", "coefficients": {')
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_profile(str(bad))
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({"name": "x", "coefficients": {"t_w_ms": 1.0}}))
    with pytest.raises(ConfigError, match="lacks t0_ms"):
        load_profile(str(partial))
    negative = tmp_path / "neg.json"
    coeffs = dict.fromkeys(COEFFICIENT_KEYS, 1.0)
    coeffs["g_ms_per_token"] = -1.0
    negative.write_text(json.dumps({"name": "x", "coefficients": coeffs}))
    with pytest.raises(ConfigError, match="g_ms"):
        load_profile(str(negative))


def test_parse_overrides_and_replace() -> None:
    """Override strings parse (field or file keys) and apply via replace; bad keys list valid."""
    over = parse_overrides("t_w_ms=8, b_ms=0.02,kv_pool_tokens=1e5,c_ms_per_pair=2e-6")
    assert over == {"t_w_ms": 8.0, "b_ms": 0.02, "kv_pool_tokens": 100_000, "c_ms": 2e-6}
    assert isinstance(over["kv_pool_tokens"], int)
    m = load_profile(DEFAULT_PROFILE).replace(**over)
    assert (m.t_w_ms, m.b_ms, m.kv_pool_tokens, m.c_ms) == (8.0, 0.02, 100_000, 2e-6)
    assert parse_overrides("") == {}
    with pytest.raises(ConfigError, match="valid: t_w_ms"):
        parse_overrides("tw=3")
    with pytest.raises(ConfigError, match="not a number"):
        parse_overrides("b_ms=fast")
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides("b_ms")
    with pytest.raises(ConfigError, match="valid: name, t_w_ms"):
        m.replace(bogus=1)
    with pytest.raises(ConfigError, match="b_ms"):
        m.replace(b_ms=-0.1)


def test_to_dict_roundtrip() -> None:
    """to_dict holds every field and rebuilds an equal model."""
    m = _model(overhead_ms=0.25)
    assert StepModel(**m.to_dict()) == m


def _synthetic_points(m: StepModel) -> list[dict]:
    pts = []
    for n in (64, 128, 256, 512, 1024, 2048, 4096):
        for h in (0, 1024, 4096, 16384):
            pairs = prefill_pairs(n, h)
            pts.append(
                dict(
                    new_tokens=n,
                    prefill_pairs=pairs,
                    decode_context=0,
                    ms=1000 * m.step_time(n, pairs, 0),
                )
            )
    for batch in (1, 4, 16, 32, 64, 128, 256):
        for ctx in (256, 2048, 8192):
            pts.append(
                dict(
                    new_tokens=batch,
                    prefill_pairs=0,
                    decode_context=batch * ctx,
                    ms=1000 * m.step_time(batch, 0, batch * ctx),
                )
            )
    return pts


@pytest.mark.parametrize("profile", ["l40-llama3-8b", "h100-llama3-8b-measured"])
def test_fit_recovers_known_coefficients(profile: str) -> None:
    """Fitting points generated by a known model recovers its coefficients within 1%."""
    truth = load_profile(profile)
    fitted, report = fit_step_model(
        _synthetic_points(truth), "fit", truth.kv_pool_tokens, source="synthetic"
    )
    for key in ("t_w_ms", "t0_ms", "b_ms", "c_ms", "g_ms"):
        assert getattr(fitted, key) == pytest.approx(getattr(truth, key), rel=0.01), key
    assert report["max_abs_rel_err"] < 1e-6
    assert fitted.kv_pool_tokens == truth.kv_pool_tokens and fitted.source == "synthetic"


def test_fit_on_measured_points() -> None:
    """The measured profile's own points (benchmark format) fit with median error < 5%."""
    data = _profile_json("h100-llama3-8b-measured")
    fitted, report = fit_step_model(data["points"], "refit", 451_068)
    assert report["n_points"] == sum(len(v) for v in data["points"].values())
    assert report["median_abs_rel_err"] < 0.05
    assert len(report["rel_errors"]) == report["n_points"]
    # the prefill+decode subset reproduces the coefficients stored in the file
    subset = {"prefill": data["points"]["prefill"], "decode": data["points"]["decode"]}
    fitted, _ = fit_step_model(subset, "refit", 451_068)
    for key, fld in COEFFICIENT_KEYS.items():
        assert getattr(fitted, fld) == pytest.approx(data["coefficients"][key], rel=0.01), key


def test_fit_rejects_bad_points() -> None:
    """Too few points, or points without a time, raise ConfigError."""
    with pytest.raises(ConfigError, match="at least 5"):
        fit_step_model([dict(new_tokens=1, prefill_pairs=0, decode_context=0, ms=1.0)], "x", 10)
    with pytest.raises(ConfigError, match="lacks its time"):
        fit_step_model([dict(new_tokens=1)] * 6, "x", 10)


def test_at_speed_divides_every_time_and_keeps_the_pool() -> None:
    from kvroute.sim.step_model import parse_speeds

    base = StepModel("m", t_w_ms=10.0, t0_ms=2.0, b_ms=0.1, c_ms=1e-4, g_ms=1e-3,
                     kv_pool_tokens=1000, overhead_ms=1.0)
    half = base.at_speed(0.5)
    assert half.step_ms(300, 5000, 2000) == pytest.approx(2 * base.step_ms(300, 5000, 2000))
    assert half.kv_pool_tokens == 1000 and base.at_speed(1) is base
    for bad in (0, -1.0, float("nan"), True):
        with pytest.raises(ConfigError, match="speed"):
            base.at_speed(bad)  # type: ignore[arg-type]
    assert parse_speeds("1, 0.5,,2") == (1.0, 0.5, 2.0) and parse_speeds(None) == ()
    with pytest.raises(ConfigError, match="'fast'"):
        parse_speeds("1,fast")
    with pytest.raises(ConfigError, match=r"got 0\.0"):
        parse_speeds("1,0")
