"""OnlineRegression: the bounded coefficients are the least-squares fit under the bounds,
not the unbounded fit clipped."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import nnls

from kvroute.routing.online_regression import OnlineRegression


def collinear(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Features that move together, and a target whose unbounded fit needs a negative
    coefficient: y = 0.3 - 0.03 b + 1.1 c, with c about b / 30."""
    rng = np.random.default_rng(seed)
    b = rng.uniform(1, 40, n)
    c = b / 30 + rng.normal(0, 0.05, n)
    x = np.column_stack([np.ones(n), b, c])
    y = x @ [0.3, -0.03, 1.1] + rng.normal(0, 0.02, n)
    return x, y


def fitted(x: np.ndarray, y: np.ndarray, **kwargs: float) -> OnlineRegression:
    model = OnlineRegression([0.0, 0.0, 0.0], lam=1.0, p0=1e9, **kwargs)
    for xi, yi in zip(x, y, strict=True):
        model.update(xi, float(yi))
    return model


def test_bounded_fit_is_the_nonnegative_least_squares_fit() -> None:
    x, y = collinear()
    model = fitted(x, y)
    assert model.theta[1] < 0  # the unbounded fit
    expected, _ = nnls(x, y)
    assert model.coefficients() == pytest.approx(expected, rel=1e-6, abs=1e-9)


def test_bounded_fit_is_unbiased_where_clipping_is_not() -> None:
    x, y = collinear()
    model = fitted(x, y)
    clipped = np.maximum(model.theta, 0.0)
    bounded = model.coefficients()
    assert (bounded >= 0).all()
    assert np.mean(x @ clipped - y) > 0.5  # clipping: far too high on average
    assert abs(np.mean(x @ bounded - y)) < 0.01  # the intercept is free: mean error ~0
    assert np.sum((x @ bounded - y) ** 2) < np.sum((x @ clipped - y) ** 2)


def test_within_the_bounds_the_fit_is_the_unbounded_one() -> None:
    rng = np.random.default_rng(1)
    x = np.column_stack([np.ones(200), rng.uniform(0, 5, 200), rng.uniform(0, 9, 200)])
    model = fitted(x, x @ [0.1, 0.2, 0.3])
    assert np.array_equal(model.coefficients(), model.theta)
    assert model.coefficients() == pytest.approx([0.1, 0.2, 0.3], abs=1e-6)


def test_no_floor_keeps_negative_coefficients() -> None:
    x, y = collinear()
    model = fitted(x, y, floor=-math.inf)
    assert model.coefficients()[1] < 0
    assert np.array_equal(model.coefficients(), model.theta)


def test_coefficients_follow_updates_and_start_at_the_prior() -> None:
    model = OnlineRegression([1.0, 2.0], lam=0.99)
    assert model.coefficients().tolist() == [1.0, 2.0]
    model.update([1.0, 0.0], -5.0)  # pulls the first coefficient below 0
    assert model.theta[0] < 0 and model.coefficients()[0] == 0.0
    assert model.predict([1.0, 1.0]) == pytest.approx(float(model.coefficients().sum()))


@settings(max_examples=60, deadline=None)
@given(k=st.integers(1, 4), seed=st.integers(0, 10_000))
def test_bounded_fit_matches_nnls_on_random_problems(k: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, (12 * k, k))
    y = x @ rng.normal(0, 1, k) + rng.normal(0, 0.1, 12 * k)
    model = OnlineRegression([0.0] * k, lam=1.0, p0=1e9)
    for xi, yi in zip(x, y, strict=True):
        model.update(xi, float(yi))
    got = model.coefficients()
    expected, _ = nnls(x, y)
    assert (got >= 0).all()
    err = np.sum((x @ got - y) ** 2)
    assert err <= np.sum((x @ expected - y) ** 2) * (1 + 1e-6) + 1e-9
    assert got == pytest.approx(expected, abs=1e-5)
    with pytest.raises(ValueError):
        model.coefficients()[0] = 1.0  # the cached fit cannot be changed by a caller
