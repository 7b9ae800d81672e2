"""Fitting a :class:`~kvroute.sim.step_model.StepModel` to measured step times.

A measured point is one step: its features ``(N, pairs, ctx)`` (see the formula in
:mod:`kvroute.sim.step_model`) and its time in ms. The fit finds ``T_w, T0, b, c, g`` (the
overhead is left at 0: a constant per-step cost is absorbed in ``T_w`` and ``T0``) by
non-negative least squares; the model is evaluated only through
:meth:`StepModel.step_ms <kvroute.sim.step_model.StepModel.step_ms>` and
:meth:`~kvroute.sim.step_model.StepModel.on_floor`, never restated here. Deterministic: no
randomness, the same points give the same coefficients.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from kvroute.errors import ConfigError
from kvroute.sim.step_model import StepModel, prefill_pairs

__all__ = ["fit_step_model", "step_points"]

Features = tuple[float, float, float]  # (N, prefill pairs, decode context) of one step


def _point_features(p: Any, idx: int) -> tuple[float, float, float, float]:
    if not isinstance(p, Mapping):
        raise ConfigError(f"step point #{idx} is not an object: {p!r}")
    t = p.get("ms", p.get("median_ms"))
    if t is None:
        raise ConfigError(f"step point #{idx} lacks its time 'ms' (or 'median_ms')")
    if "new_tokens" in p:
        try:
            return (
                float(p["new_tokens"]),
                float(p.get("prefill_pairs", 0.0)),
                float(p.get("decode_context", 0.0)),
                float(t),
            )
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"step point #{idx} has a non-numeric field: {exc}") from None
    if "n" in p or "B" in p:
        # benchmark format: one prefill chunk (n new on h cached) and/or B decodes at l each
        try:
            n = float(p.get("n") or 0)
            h = float(p.get("h") or 0)
            batch = float(p.get("B") or 0)
            ctx = float(p.get("l") or 0)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"step point #{idx} has a non-numeric field: {exc}") from None
        return n + batch, prefill_pairs(n, h), batch * ctx, float(t)
    raise ConfigError(
        f"step point #{idx} needs new_tokens/prefill_pairs/decode_context (or n,h / B,l) "
        f"and ms; got keys {sorted(p)}"
    )


def step_points(points: Any) -> list[tuple[float, float, float, float]]:
    """Normalise measured points to ``(N, pairs, ctx, ms)`` tuples.

    Accepts a list of ``{"new_tokens", "prefill_pairs", "decode_context", "ms"}`` dicts, a
    list in the benchmark's format (``n``, ``h``, ``B``, ``l``, ``median_ms``), the
    benchmark's ``points`` object (``{"prefill": [...], "decode": [...], "mixed": [...]}``)
    or a whole measured profile (its ``points`` are used).
    """
    if isinstance(points, Mapping):
        if "points" in points:
            points = points["points"]
        if isinstance(points, Mapping):
            groups: list[Any] = []
            for value in points.values():
                if not isinstance(value, list):
                    raise ConfigError("a points object must map group names to lists of points")
                groups.extend(value)
            points = groups
    if not isinstance(points, Iterable) or isinstance(points, (str, bytes)):
        raise ConfigError("points must be a list of step measurements")
    out = [_point_features(p, i) for i, p in enumerate(points)]
    for i, (n, a, c, t) in enumerate(out):
        if not (t > 0 and math.isfinite(t)) or min(n, a, c) < 0:
            raise ConfigError(f"step point #{i} needs ms > 0 and non-negative token counts")
    return out


def _nnls_small(a: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative least squares for a handful of columns, by trying every support."""
    k = a.shape[1]
    scale = np.abs(a).max(axis=0)
    scale[scale == 0] = 1.0
    a_s = a / scale
    best: tuple[float, np.ndarray] | None = None
    for mask in range(1, 1 << k):
        cols = [j for j in range(k) if mask >> j & 1]
        sub = a_s[:, cols]
        if np.linalg.matrix_rank(sub) < len(cols):
            continue
        sol, *_ = np.linalg.lstsq(sub, y, rcond=None)
        if (sol < 0).any():
            continue
        r = float(np.sum((sub @ sol - y) ** 2))
        if best is None or r < best[0] - 1e-15:
            full = np.zeros(k)
            full[cols] = sol
            best = (r, full)
    if best is None:
        return np.zeros(k)
    result: np.ndarray = best[1] / scale
    return result


def _model(coef: np.ndarray, name: str = "fit", kv_pool_tokens: int = 1,
           source: str = "") -> StepModel:
    """The model of ``coef`` = (T_w, T0, b, c, g), without overhead."""
    t_w, t0, b, c, g = (float(v) for v in coef)
    return StepModel(name=name, t_w_ms=t_w, t0_ms=t0, b_ms=b, c_ms=c, g_ms=g,
                     kv_pool_tokens=kv_pool_tokens, source=source)


def _predict(feats: Sequence[Features], coef: np.ndarray) -> np.ndarray:
    """Step times (ms) of the model ``coef`` at each point."""
    model = _model(coef)
    return np.array([model.step_ms(n, pairs, ctx) for n, pairs, ctx in feats])


def _on_floor(feats: Sequence[Features], coef: np.ndarray) -> np.ndarray:
    """For each point, whether the model ``coef`` puts it on the floor T_w."""
    model = _model(coef)
    return np.array([model.on_floor(n) for n, _, _ in feats], dtype=bool)


def _fit_given_floor(x: np.ndarray, t: np.ndarray, floor: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Least squares of the model linearised by the branch of the max() each point is on:
    columns (floor, compute, compute*N, pairs, ctx) -> (T_w, T0, b, c, g)."""
    comp = ~floor
    design = np.column_stack(
        [floor.astype(float), comp.astype(float), comp * x[:, 0], x[:, 1], x[:, 2]]
    )
    coef = _nnls_small(design * w[:, None], t * w)
    if not floor.any():
        coef[0] = 0.0  # no floor point: T_w is not identified
    return coef


def fit_step_model(
    points: Any,
    name: str,
    kv_pool_tokens: int,
    source: str = "",
    *,
    relative: bool = True,
) -> tuple[StepModel, dict[str, Any]]:
    """Fit T_w, T0, b, c, g to measured step times by (non-negative) least squares.

    ``points``: see :func:`step_points`. The max() makes the model piecewise: every
    split "points with N <= threshold sit on the floor" is tried (each a linear least
    squares), the split whose max-model fits best is kept, then refined by reassigning
    points to whichever branch of the max() the fit puts them on. ``relative`` weights
    residuals by 1/ms (fits relative error, as the measured profile did).

    Returns the model and a report: ``n_points``, ``median_abs_rel_err``,
    ``max_abs_rel_err``, ``rel_rmse``, ``n_floor_points``, ``knee_tokens`` and
    ``rel_errors`` (per point, in input order).
    """
    rows = step_points(points)
    if len(rows) < 5:
        raise ConfigError(f"fitting needs at least 5 step points, got {len(rows)}")
    feats: list[Features] = [(n, pairs, ctx) for n, pairs, ctx, _ in rows]
    arr = np.asarray(rows, dtype=float)
    x, t = arr[:, :3], arr[:, 3]
    w = 1.0 / t if relative else np.ones_like(t)

    def loss(coef: np.ndarray) -> float:
        return float(np.sum(((_predict(feats, coef) - t) * w) ** 2))

    ns = np.unique(x[:, 0])
    best: tuple[float, np.ndarray] | None = None
    for thr in [-math.inf, *ns.tolist()]:
        floor = x[:, 0] <= thr
        if np.unique(x[~floor, 0]).size < 2:
            continue  # the slope b needs two distinct N on the compute line
        coef = _fit_given_floor(x, t, floor, w)
        val = loss(coef)
        if best is None or val < best[0]:
            best = (val, coef)
    if best is None:
        raise ConfigError(
            "fitting needs steps with at least two distinct token counts N above the floor"
        )
    val, coef = best
    for _ in range(50):  # alternate: assign each point to its branch of the max, refit
        floor = _on_floor(feats, coef)
        if np.unique(x[~floor, 0]).size < 2:
            break
        new = _fit_given_floor(x, t, floor, w)
        new_val = loss(new)
        if new_val >= val - 1e-15:
            break
        val, coef = new_val, new
    model = _model(coef, name, kv_pool_tokens, source)
    rel = (_predict(feats, coef) - t) / t
    abs_rel = np.abs(rel)
    report: dict[str, Any] = {
        "n_points": len(rows),
        "median_abs_rel_err": float(statistics.median(abs_rel.tolist())),
        "max_abs_rel_err": float(abs_rel.max()),
        "rel_rmse": float(math.sqrt(float(np.mean(rel**2)))),
        "n_floor_points": int(_on_floor(feats, coef).sum()),
        "knee_tokens": model.knee_tokens if model.t_w_ms > 0 else 0.0,
        "relative": relative,
        "rel_errors": [float(v) for v in rel],
    }
    return model, report
