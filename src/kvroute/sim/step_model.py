"""Step-time model of one continuous-batching worker, its profiles, and a fitter.

One engine step runs a prefill set P (request i adds ``n_i`` new tokens on top of ``h_i``
tokens already cached or computed) and a decode set D (request j has context ``l_j``)::

    N     = sum_P n_i + |D|
    T     = max(T_w, T0 + b*N) + c * sum_P n_i*(h_i + n_i/2) + g * sum_D l_j + overhead

``T_w`` is the weight-read floor, ``T0 + b*N`` the compute line of the linear layers, ``c``
prices prefill query-key pairs and ``g`` decode context tokens (reading the KV cache). The
coefficients are data: one JSON file per profile in ``kvroute/profiles/`` with its source
(see ``docs/calibration.md``). :func:`fit_step_model` fits them to measured step times.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from kvroute.errors import ConfigError, UnknownNameError

__all__ = [
    "COEFFICIENT_KEYS",
    "DEFAULT_PROFILE",
    "PROFILE_KINDS",
    "StepModel",
    "fit_step_model",
    "load_profile",
    "parse_overrides",
    "prefill_pairs",
    "profile_names",
    "profile_record",
    "step_points",
]

DEFAULT_PROFILE = "l40-llama3-8b"
PROFILE_KINDS = ("measured", "published", "roofline", "paper")

# JSON key in a profile's "coefficients" -> StepModel field
COEFFICIENT_KEYS: dict[str, str] = {
    "t_w_ms": "t_w_ms",
    "t0_ms": "t0_ms",
    "b_ms_per_token": "b_ms",
    "c_ms_per_pair": "c_ms",
    "g_ms_per_token": "g_ms",
    "kv_pool_tokens": "kv_pool_tokens",
}
_OPTIONAL_COEFFICIENT_KEYS: dict[str, str] = {"overhead_ms": "overhead_ms"}
_FLOAT_FIELDS = ("t_w_ms", "t0_ms", "b_ms", "c_ms", "g_ms", "overhead_ms")
_NUMERIC_FIELDS = (*_FLOAT_FIELDS, "kv_pool_tokens")


def prefill_pairs(n: int, h: int) -> float:
    """Query-key pairs of a prefill chunk of ``n`` new tokens on ``h`` earlier ones."""
    return n * (h + n / 2.0)


@dataclass(frozen=True)
class StepModel:
    """Coefficients of the step-time model (times in ms; :meth:`step_time` returns s)."""

    name: str
    t_w_ms: float  # weight-read floor of a step
    t0_ms: float  # fixed cost of the compute line
    b_ms: float  # ms per token through the linear layers
    c_ms: float  # ms per prefill query-key pair
    g_ms: float  # ms per decode context token
    kv_pool_tokens: int  # KV pool size of one worker (tokens)
    overhead_ms: float = 0.0  # per-step scheduler/CPU overhead
    source: str = ""  # where the numbers come from (citation / measurement file)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError("StepModel.name must be a non-empty string")
        for key in _FLOAT_FIELDS:
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(
                    f"step model {self.name!r}: {key} must be a number, got {value!r}"
                )
            if not math.isfinite(value) or value < 0:
                raise ConfigError(
                    f"step model {self.name!r}: {key} must be a finite number >= 0, "
                    f"got {value!r}; set it to 0 to drop that term"
                )
            object.__setattr__(self, key, float(value))
        pool: Any = self.kv_pool_tokens
        if isinstance(pool, float) and pool.is_integer():
            pool = int(pool)
        if isinstance(pool, bool) or not isinstance(pool, int) or pool < 1:
            raise ConfigError(
                f"step model {self.name!r}: kv_pool_tokens must be an integer >= 1 "
                f"(tokens of KV cache one worker holds), got {self.kv_pool_tokens!r}"
            )
        object.__setattr__(self, "kv_pool_tokens", pool)
        if not isinstance(self.source, str):
            raise ConfigError(f"step model {self.name!r}: source must be a string")

    def step_time(self, new_tokens: int, prefill_pairs: float, decode_context: int) -> float:
        """Seconds for one step.

        ``new_tokens`` = N = sum_P n_i + |D|; ``prefill_pairs`` = sum_P n_i*(h_i + n_i/2);
        ``decode_context`` = sum_D l_j.
        T = max(T_w, T0 + b*N) + c*pairs + g*ctx + overhead, converted ms -> s.
        """
        lin = self.t0_ms + self.b_ms * new_tokens
        if lin < self.t_w_ms:
            lin = self.t_w_ms
        return (
            lin + self.c_ms * prefill_pairs + self.g_ms * decode_context + self.overhead_ms
        ) * 0.001

    @property
    def knee_tokens(self) -> float:
        """Batched tokens where the compute line meets the floor (inf when b = 0)."""
        if self.b_ms <= 0:
            return math.inf
        return max(0.0, (self.t_w_ms - self.t0_ms) / self.b_ms)

    def replace(self, **overrides: Any) -> StepModel:
        """A copy with some fields changed (validated like the constructor)."""
        valid = [f.name for f in dataclasses.fields(self)]
        unknown = sorted(set(overrides) - set(valid))
        if unknown:
            raise ConfigError(
                f"unknown step-model field(s) {', '.join(unknown)}; valid: {', '.join(valid)}"
            )
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        """All fields, by their field names (JSON-ready)."""
        return dataclasses.asdict(self)

    def coefficients(self) -> dict[str, float | int]:
        """The coefficients under the profile-file keys (see :data:`COEFFICIENT_KEYS`)."""
        out: dict[str, float | int] = {k: getattr(self, f) for k, f in COEFFICIENT_KEYS.items()}
        if self.overhead_ms:
            out["overhead_ms"] = self.overhead_ms
        return out


# ---------------------------------------------------------------------------
# profiles (data files)
# ---------------------------------------------------------------------------


def _profile_dir() -> Any:
    return resources.files("kvroute").joinpath("profiles")


def profile_names() -> list[str]:
    """Names of the shipped profiles (file stems in ``kvroute/profiles/``), sorted."""
    return sorted(
        entry.name[: -len(".json")]
        for entry in _profile_dir().iterdir()
        if entry.name.endswith(".json") and entry.is_file()
    )


def _looks_like_path(text: str) -> bool:
    return text.endswith(".json") or "/" in text or "\\" in text or text.startswith(".")


def load_profile(name_or_path: str) -> StepModel:
    """A :class:`StepModel` from a shipped profile name or a path to a profile JSON file."""
    names = profile_names()
    if name_or_path in names:
        where = f"profile {name_or_path!r}"
        text = _profile_dir().joinpath(name_or_path + ".json").read_text(encoding="utf-8")
    else:
        path = Path(name_or_path).expanduser()
        if not path.is_file():
            if _looks_like_path(name_or_path):
                raise ConfigError(
                    f"profile file {name_or_path!r} does not exist; pass a shipped profile "
                    f"name ({', '.join(names)}) or the path of a profile JSON file"
                )
            raise UnknownNameError(
                f"unknown profile {name_or_path!r}; valid names: {', '.join(names)} "
                "(or pass the path of a profile JSON file, see docs/calibration.md)"
            )
        where = f"profile file {str(path)!r}"
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read {where}: {exc}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{where} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from exc
    return _model_from_record(data, where)


def _model_from_record(data: Any, where: str) -> StepModel:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where} must hold a JSON object with 'name' and 'coefficients'")
    coeffs = data.get("coefficients")
    if not isinstance(coeffs, Mapping):
        raise ConfigError(
            f"{where} lacks a 'coefficients' object with keys {', '.join(COEFFICIENT_KEYS)}"
        )
    missing = [k for k in COEFFICIENT_KEYS if k not in coeffs]
    if missing:
        raise ConfigError(
            f"{where}: 'coefficients' lacks {', '.join(missing)} "
            f"(needs {', '.join(COEFFICIENT_KEYS)}; optional: overhead_ms)"
        )
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where} lacks a 'name' string")
    kwargs: dict[str, Any] = {}
    for key, fld in {**COEFFICIENT_KEYS, **_OPTIONAL_COEFFICIENT_KEYS}.items():
        if key in coeffs:
            kwargs[fld] = coeffs[key]
    source = data.get("source", "")
    if not isinstance(source, str):
        source = json.dumps(source)
    try:
        return StepModel(name=name, source=source, **kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def profile_record(
    model: StepModel,
    *,
    gpu: str,
    model_name: str,
    date: str,
    kind: str,
    notes: str = "",
    **extra: Any,
) -> dict[str, Any]:
    """A JSON-ready profile record (the schema of ``kvroute/profiles/*.json``)."""
    if kind not in PROFILE_KINDS:
        raise ConfigError(f"kind must be one of {', '.join(PROFILE_KINDS)}, got {kind!r}")
    record: dict[str, Any] = {
        "name": model.name,
        "gpu": gpu,
        "model": model_name,
        "date": date,
        "kind": kind,
        "source": model.source,
        "notes": notes,
        "coefficients": model.coefficients(),
    }
    record.update(extra)
    return record


def parse_overrides(text: str) -> dict[str, float | int]:
    """Parse ``"t_w_ms=8,b_ms=0.02"`` into StepModel field overrides.

    Keys are StepModel field names or profile-file keys (``b_ms_per_token`` means ``b_ms``).
    """
    valid = {f: f for f in _NUMERIC_FIELDS}
    valid.update(COEFFICIENT_KEYS)
    valid.update(_OPTIONAL_COEFFICIENT_KEYS)
    out: dict[str, float | int] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, raw = item.partition("=")
        key, raw = key.strip(), raw.strip()
        if not sep or not key or not raw:
            raise ConfigError(f"step-coefficient override {item!r} is not of the form key=value")
        if key not in valid:
            raise ConfigError(
                f"unknown step coefficient {key!r}; valid: {', '.join(_NUMERIC_FIELDS)}"
            )
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"step coefficient {key}={raw!r} is not a number") from None
        fld = valid[key]
        if fld == "kv_pool_tokens":
            if not value.is_integer():
                raise ConfigError(f"kv_pool_tokens must be a whole number of tokens, got {raw}")
            out[fld] = int(value)
        else:
            out[fld] = value
    return out


# ---------------------------------------------------------------------------
# fitting
# ---------------------------------------------------------------------------


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
        return n + batch, n * (h + n / 2.0), batch * ctx, float(t)
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
    return best[1] / scale


def _predict(x: np.ndarray, coef: np.ndarray) -> np.ndarray:
    t_w, t0, b, c, g = coef
    return np.maximum(t_w, t0 + b * x[:, 0]) + c * x[:, 1] + g * x[:, 2]


def _fit_given_floor(x: np.ndarray, t: np.ndarray, floor: np.ndarray, w: np.ndarray) -> np.ndarray:
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
    arr = np.asarray(rows, dtype=float)
    x, t = arr[:, :3], arr[:, 3]
    w = 1.0 / t if relative else np.ones_like(t)

    def loss(coef: np.ndarray) -> float:
        return float(np.sum(((_predict(x, coef) - t) * w) ** 2))

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
        floor = coef[0] >= coef[1] + coef[2] * x[:, 0]
        if np.unique(x[~floor, 0]).size < 2:
            break
        new = _fit_given_floor(x, t, floor, w)
        new_val = loss(new)
        if new_val >= val - 1e-15:
            break
        val, coef = new_val, new
    t_w, t0, b, c, g = (float(v) for v in coef)
    model = StepModel(
        name=name,
        t_w_ms=t_w,
        t0_ms=t0,
        b_ms=b,
        c_ms=c,
        g_ms=g,
        kv_pool_tokens=kv_pool_tokens,
        source=source,
    )
    rel = (_predict(x, coef) - t) / t
    abs_rel = np.abs(rel)
    floor = coef[0] >= coef[1] + coef[2] * x[:, 0]
    report: dict[str, Any] = {
        "n_points": len(rows),
        "median_abs_rel_err": float(statistics.median(abs_rel.tolist())),
        "max_abs_rel_err": float(abs_rel.max()),
        "rel_rmse": float(math.sqrt(float(np.mean(rel**2)))),
        "n_floor_points": int(floor.sum()),
        "knee_tokens": model.knee_tokens if t_w > 0 else 0.0,
        "relative": relative,
        "rel_errors": [float(v) for v in rel],
    }
    return model, report
