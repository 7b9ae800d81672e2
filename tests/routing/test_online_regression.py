"""OnlineRegression: the RLS fit, the coefficients clipped at the floor, and the intercept
refitted to the clipped slopes."""

import math

import numpy as np
import pytest

from kvroute.errors import ConfigError
from kvroute.routing.online_regression import OnlineRegression, _solve


def fitted(x: np.ndarray, y: np.ndarray, **kwargs: float) -> OnlineRegression:
    model = OnlineRegression([0.0] * x.shape[1], lam=1.0, p0=1e9, **kwargs)
    for xi, yi in zip(x, y, strict=True):
        model.update(xi, float(yi))
    return model


def test_theta_is_the_least_squares_fit_and_negative_coefficients_are_clipped() -> None:
    rng = np.random.default_rng(0)
    x = np.column_stack([np.ones(300), rng.uniform(0, 5, 300), rng.uniform(0, 9, 300)])
    y = x @ [0.4, -0.05, 0.3] + rng.normal(0, 0.01, 300)
    model = fitted(x, y)
    expected, *_ = np.linalg.lstsq(x, y, rcond=None)
    assert model.theta == pytest.approx(expected, abs=1e-6)
    assert model.coefficients().tolist() == [model.theta[0], 0.0, model.theta[2]]
    assert model.predict([1.0, 2.0, 3.0]) == pytest.approx(model.theta[0] + 3 * model.theta[2])


def test_no_floor_keeps_negative_coefficients() -> None:
    x = np.column_stack([np.ones(50), np.arange(50.0)])
    model = fitted(x, 3.0 - 0.5 * x[:, 1], floor=-math.inf)
    assert model.coefficients() == pytest.approx([3.0, -0.5], abs=1e-6)


def test_forgetting_follows_a_change() -> None:
    model = OnlineRegression([0.0], lam=0.9)
    for _ in range(100):
        model.update([1.0], 1.0)
    for _ in range(100):
        model.update([1.0], 2.0)
    assert model.coefficients()[0] == pytest.approx(2.0, abs=1e-3)


def test_a_non_finite_target_teaches_nothing_and_bad_settings_are_refused() -> None:
    model = OnlineRegression([1.0, 2.0])
    model.update([1.0, 1.0], math.nan)
    assert model.samples == 0 and model.coefficients().tolist() == [1.0, 2.0]
    with pytest.raises(ConfigError):
        OnlineRegression([0.0], lam=0.0)
    with pytest.raises(ConfigError):
        OnlineRegression([0.0], p0=0.0)


def collinear(n: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """Features that move together, and a target whose unbounded fit needs a negative
    slope: y = 2 - 0.03 b + 1.1 c, with c about b / 30."""
    rng = np.random.default_rng(0)
    b = rng.uniform(1, 40, n)
    c = b / 30 + rng.normal(0, 0.05, n)
    x = np.column_stack([np.ones(n), b, c])
    return x, x @ [2.0, -0.03, 1.1] + rng.normal(0, 0.02, n)


def test_the_intercept_refitted_to_the_clipped_slopes_removes_the_bias() -> None:
    x, y = collinear()
    clipped = fitted(x, y)
    refit = fitted(x, y, intercept=0)
    assert clipped.theta[1] < 0
    assert np.mean(x @ clipped.coefficients() - y) > 0.5  # clipping: far too high
    coef = refit.coefficients()
    assert coef[1:].tolist() == clipped.coefficients()[1:].tolist()  # the same slopes
    # the intercept is the least-squares one given those slopes (here above the floor)
    expected = np.mean(y - x[:, 1:] @ coef[1:])
    assert coef[0] == pytest.approx(expected, abs=1e-6) and coef[0] > 0
    assert abs(np.mean(x @ coef - y)) < 1e-6


def test_the_refitted_intercept_stays_at_least_the_floor() -> None:
    x, y = collinear()
    y = y - 4.0  # the refit would be far below 0
    coef = fitted(x, y, intercept=0).coefficients()
    assert coef[0] == 0.0 and (coef >= 0).all()


def test_within_the_bounds_the_intercept_refit_changes_nothing() -> None:
    rng = np.random.default_rng(1)
    x = np.column_stack([rng.uniform(0, 5, 200), rng.uniform(0, 9, 200), np.ones(200)])
    model = fitted(x, x @ [0.1, 0.2, 0.3], intercept=2)
    assert model.coefficients() == pytest.approx(model.theta, abs=1e-12)
    with pytest.raises(ConfigError):
        OnlineRegression([0.0, 0.0], intercept=2)


def test_coefficients_are_computed_once_per_fit_and_follow_each_update() -> None:
    model = OnlineRegression([1.0, -1.0], intercept=0)
    first = model.coefficients()
    assert model.coefficients() is first and not first.flags.writeable
    model.update([1.0, 2.0], 5.0)
    assert model.coefficients() is not first
    assert model.coefficients().tolist() != first.tolist()
    model.theta = np.array([0.5, 0.25])  # a replaced fit is read afresh
    assert model.coefficients().tolist() == [0.5, 0.25]
    # the list form: the same numbers, cached the same way
    x, y = collinear()
    for kwargs in ({"intercept": 0}, {"intercept": 0, "ridge": [0.0, 0.0, 5.0]}, {}):
        fit = fitted(x, y, **kwargs)
        listed = fit.coefficient_list()
        assert fit.coefficient_list() is listed
        assert listed == fit.coefficients().tolist()
        assert fit.theta[1] < 0 and min(listed) >= 0.0  # clipped


def test_a_ridge_pulls_undetermined_coefficients_to_the_prior() -> None:
    """The coefficients with ``ridge`` are the penalised least-squares fit (solved in one
    batch here); a ridge of 0 changes nothing, and where two features move together the
    ridged one stays near its prior while the other explains the target."""
    x, y = collinear()
    plain = fitted(x, y, floor=-math.inf)
    assert fitted(x, y, floor=-math.inf, ridge=[0.0, 0.0, 0.0]).coefficients() == \
        pytest.approx(plain.coefficients(), abs=1e-9)
    r = np.diag([0.0, 0.0, 50.0])
    ridged = fitted(x, y, floor=-math.inf, ridge=[0.0, 0.0, 50.0])
    expected = np.linalg.solve(x.T @ x + r, x.T @ y)  # prior 0
    assert ridged.coefficients() == pytest.approx(expected, rel=1e-6)
    assert abs(ridged.coefficients()[2]) < 0.5 * abs(plain.coefficients()[2])
    assert ridged.coefficients()[1] > 0 > plain.coefficients()[1]
    with pytest.raises(ConfigError):
        OnlineRegression([0.0, 0.0], ridge=[1.0])
    with pytest.raises(ConfigError):
        OnlineRegression([0.0, 0.0], ridge=[1.0, -1.0])


def test_a_long_run_keeps_p_symmetric_and_keeps_learning() -> None:
    # k px' as the P update grew P's rounding asymmetry by 1 / lam per sample: at lam 0.998
    # P stopped being positive definite after about 12,700 samples, the coefficients went
    # astray and the model stopped learning
    rng = np.random.default_rng(1)
    model = OnlineRegression([0.0] * 4, lam=0.998, intercept=0)
    truth = np.array([0.5, 0.2, 1.0, 0.05])
    for i in range(23_000):
        if i == 20_000:
            truth = np.array([0.3, 0.4, 0.8, 0.1])  # the world changes; forgetting follows
        x = np.array([1.0, *rng.uniform(0, [3.0, 1.0, 10.0])])
        model.update(x, float(x @ truth + rng.normal(0, 0.01)))
    assert model.samples == 23_000 and model.resets == 0
    assert (model.P == model.P.T).all()
    assert np.linalg.eigvalsh(model.P).min() > 0
    assert model.coefficients() == pytest.approx(truth, abs=0.01)


def test_a_direction_no_sample_excites_is_reset_before_it_overflows() -> None:
    # features that never move apart (a constant count beside the intercept): P grows by
    # 1 / lam per sample in that direction, and at lam 0.95 would overflow within 14,000
    rng = np.random.default_rng(2)
    model = OnlineRegression([0.0] * 3, lam=0.95, intercept=0)
    with np.errstate(all="raise"):  # no overflow anywhere on the way
        for _ in range(20_000):
            c = float(rng.uniform(0, 1))
            model.update([1.0, 2.0, c], 0.09 + 0.3 * c)
    assert model.samples == 20_000 and model.resets >= 1
    assert np.isfinite(model.P).all()
    assert model.predict([1.0, 2.0, 0.5]) == pytest.approx(0.24, abs=1e-6)


def test_a_p_gone_astray_is_reset_and_the_sample_still_teaches() -> None:
    model = OnlineRegression([0.0, 0.0], lam=0.99)
    model.P = -np.eye(2)  # not positive definite: x' P x < 0 for every x
    model.update([1.0, 1.0], 2.0)
    assert model.resets == 1 and model.samples == 1
    assert model.coefficients().sum() == pytest.approx(2.0, abs=1e-3)
    model.update([math.nan, 1.0], 1.0)  # a bad sample is not a bad P
    assert model.resets == 1 and model.samples == 1


def test_a_ridge_fit_stays_solvable_when_the_samples_never_vary() -> None:
    # the same sample again and again (one client sending one request at a time): only the
    # direction of x is excited, forgetting took the start's weight from the others, and
    # M + R went singular after about 9,000 samples at lam 0.998 (`learned`'s reported
    # decode model: every decision of a live router then failed); the prior's starting
    # weight, given back, keeps the unexcited directions at the prior
    prior = [0.02, 0.001, 0.0]
    model = OnlineRegression(prior, lam=0.998, intercept=0, ridge=(0.0, 0.0, 1.0))
    x = [1.0, 2.0, 0.5]
    for _ in range(20_000):
        model.update(x, 0.03)
        assert np.isfinite(model.coefficient_list()).all()
    assert model.predict(x) == pytest.approx(0.03, rel=1e-6)  # the data's direction is fitted
    d = np.array([2.0, -1.0, 0.0])  # unexcited (d . x = 0) and free of the given ridge
    assert np.dot(model.coefficients(), d) == pytest.approx(np.dot(prior, d), abs=1e-6)


def test_the_ridge_solve_agrees_with_numpy_and_pivots() -> None:
    rng = np.random.default_rng(3)
    for n in (3, 6):
        for _ in range(200):
            x = rng.normal(size=(40, n))
            m = x.T @ x + np.diag(rng.uniform(0.0, 2.0, n))
            b = rng.normal(size=n)
            got = _solve(m.tolist(), b.tolist())
            assert np.allclose(got, np.linalg.solve(m, b), rtol=1e-12, atol=1e-12)
    # a zero in the first pivot's place: partial pivoting swaps rows
    assert np.allclose(_solve([[0.0, 1.0], [2.0, 0.0]], [3.0, 4.0]), [2.0, 3.0])
    with pytest.raises(np.linalg.LinAlgError):  # singular: numpy's error, as before
        _solve([[1.0, 2.0], [2.0, 4.0]], [1.0, 1.0])
