"""The step-time model of one continuous-batching worker: the one formula and its coefficients.

One engine step runs a prefill set P (request i adds ``n_i`` new tokens on top of ``h_i``
tokens already cached or computed) and a decode set D (request j has context ``l_j``)::

    N     = sum_P n_i + |D|
    pairs = sum_P n_i*(h_i + n_i/2)                         (prefill_pairs, summed)
    ctx   = sum_D l_j
    T     = max(T_w, T0 + b*N) + c*pairs + g*ctx + overhead  (StepModel.step_ms)

``T_w`` is the weight-read floor, ``T0 + b*N`` the compute line of the linear layers, ``c``
prices prefill query-key pairs and ``g`` decode context tokens (reading the KV cache).

Contract: :meth:`StepModel.step_ms` is the only place the formula is written, and
:func:`prefill_pairs` the only place a chunk's pairs are. The simulator's steps
(``SimWorker``), its end-to-end estimate (``SimWorker.predict_e2e``) and the fitter
(:mod:`kvroute.sim.step_fit`, which evaluates a model with ``overhead_ms = 0``) all call
them. Coefficients are validated on construction (finite, >= 0; a pool of >= 1 token), so
a model is immutable data; it holds no clock and no randomness.

The coefficients are data: one JSON file per profile in ``kvroute/profiles/``
(:mod:`kvroute.sim.step_profiles`, ``docs/calibration.md``); :data:`COEFFICIENT_KEYS`
maps a file's keys to the fields here.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from kvroute.errors import ConfigError

__all__ = [
    "COEFFICIENT_KEYS",
    "OPTIONAL_COEFFICIENT_KEYS",
    "StepModel",
    "parse_overrides",
    "prefill_pairs",
]

# JSON key in a profile's "coefficients" -> StepModel field
COEFFICIENT_KEYS: dict[str, str] = {
    "t_w_ms": "t_w_ms",
    "t0_ms": "t0_ms",
    "b_ms_per_token": "b_ms",
    "c_ms_per_pair": "c_ms",
    "g_ms_per_token": "g_ms",
    "kv_pool_tokens": "kv_pool_tokens",
}
OPTIONAL_COEFFICIENT_KEYS: dict[str, str] = {"overhead_ms": "overhead_ms"}
_FLOAT_FIELDS = ("t_w_ms", "t0_ms", "b_ms", "c_ms", "g_ms", "overhead_ms")
_NUMERIC_FIELDS = (*_FLOAT_FIELDS, "kv_pool_tokens")


def prefill_pairs(n: float, h: float) -> float:
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

    def step_ms(self, new_tokens: float, prefill_pairs: float, decode_context: float) -> float:
        """Milliseconds for one step: the formula of the module docstring.

        ``new_tokens`` = N = sum_P n_i + |D|; ``prefill_pairs`` = sum_P n_i*(h_i + n_i/2)
        (see :func:`prefill_pairs`); ``decode_context`` = sum_D l_j.
        """
        lin = self.t0_ms + self.b_ms * new_tokens
        if lin < self.t_w_ms:
            lin = self.t_w_ms
        return lin + self.c_ms * prefill_pairs + self.g_ms * decode_context + self.overhead_ms

    def step_time(self, new_tokens: float, prefill_pairs: float, decode_context: float) -> float:
        """Seconds for one step: :meth:`step_ms` converted ms -> s."""
        return self.step_ms(new_tokens, prefill_pairs, decode_context) * 0.001

    def on_floor(self, new_tokens: float) -> bool:
        """Whether a step of N = ``new_tokens`` takes the floor ``T_w`` in the max() of
        :meth:`step_ms` (ties count as the floor)."""
        return self.t_w_ms >= self.t0_ms + self.b_ms * new_tokens

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

    def at_speed(self, speed: float) -> StepModel:
        """The same worker ``speed`` times as fast: every time coefficient divided by it
        (a slower or faster GPU with the same KV pool)."""
        if check_speed(speed) == 1:
            return self
        return self.replace(name=f"{self.name} x{speed:g}",
                            **{k: getattr(self, k) / speed for k in _FLOAT_FIELDS})

    def to_dict(self) -> dict[str, Any]:
        """All fields, by their field names (JSON-ready)."""
        return dataclasses.asdict(self)

    def coefficients(self) -> dict[str, float | int]:
        """The coefficients under the profile-file keys (see :data:`COEFFICIENT_KEYS`)."""
        out: dict[str, float | int] = {k: getattr(self, f) for k, f in COEFFICIENT_KEYS.items()}
        if self.overhead_ms:
            out["overhead_ms"] = self.overhead_ms
        return out


def check_speed(speed: Any) -> float:
    """``speed`` as a float, or a ConfigError unless it is a finite number > 0."""
    if isinstance(speed, bool) or not isinstance(speed, (int, float)) \
            or not (math.isfinite(speed) and speed > 0):
        raise ConfigError(f"a worker's speed must be a finite number > 0, got {speed!r}")
    return float(speed)


def parse_speeds(text: str | None) -> tuple[float, ...]:
    """Parse ``"1,1,0.5,0.5"`` (one speed per worker, see :meth:`StepModel.at_speed`),
    each checked by :func:`check_speed`; ``None`` or empty: ``()``, every worker at the
    profile's speed."""
    out: list[float] = []
    for item in (text or "").split(","):
        if not item.strip():
            continue
        try:
            value = float(item)
        except ValueError:
            raise ConfigError(f"a worker's speed must be a finite number > 0, got "
                              f"{item.strip()!r}") from None
        out.append(check_speed(value))
    return tuple(out)


def parse_overrides(text: str) -> dict[str, float | int]:
    """Parse ``"t_w_ms=8,b_ms=0.02"`` into StepModel field overrides.

    Keys are StepModel field names or profile-file keys (``b_ms_per_token`` means ``b_ms``).
    """
    valid = {f: f for f in _NUMERIC_FIELDS}
    valid.update(COEFFICIENT_KEYS)
    valid.update(OPTIONAL_COEFFICIENT_KEYS)
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
