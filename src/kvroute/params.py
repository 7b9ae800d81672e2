"""One check for the numeric and true/false parameters of kvroute's policies.

Contract:

* ``number(owner, name, value, *, low=-inf, high=inf, low_open=False, high_open=False,
  hint="")`` returns ``float(value)`` when ``value`` is an ``int``, a ``float`` or a numpy
  integer or floating scalar (never a ``bool``, a string or ``None``), is finite (no NaN,
  no infinity), and lies within the bounds: ``value >= low`` (``> low`` if ``low_open``)
  and ``value <= high`` (``< high`` if ``high_open``). An infinite bound is no bound.
* ``integer(owner, name, value, *, low=0, high=None, hint="")`` returns ``int(value)``
  when ``value`` is an ``int`` or a numpy integer (never a ``bool``; ``2.0`` is not an
  integer), ``>= low`` and, if ``high`` is given, ``<= high``.
* ``flag(owner, name, value)`` returns ``value`` when it is a ``bool`` (not ``1``, not
  ``"true"``: the command line's strings are converted before they get here).
* Anything else raises :class:`~kvroute.errors.ConfigError` with a message that names the
  owner (the policy), the parameter, what it must be and what it got::

      dynamo: temperature must be a finite number >= 0, got -0.1
      least_load: kv_clamp must be a finite number in [0, 1), got 1.0
      llmd: block must be an integer >= 1 (units per KV block; 16 by default), got 0
      dynamo: lmetric must be true or false, got 1

  The range reads ``>= 0``, ``> 0``, ``<= 1``, ``< 1``, ``in [0, 1]``, ``in (0, 1]`` ...
  (bounds formatted with ``:g``; none when both bounds are infinite). ``hint``, if given,
  follows the range after a space (units, a typical value).
"""

from __future__ import annotations

import math

import numpy as np

from kvroute.errors import ConfigError

__all__ = ["flag", "integer", "number"]

_REALS = (int, float, np.integer, np.floating)
_INTEGERS = (int, np.integer)


def number(owner: str, name: str, value: object, *, low: float = -math.inf,
           high: float = math.inf, low_open: bool = False, high_open: bool = False,
           hint: str = "") -> float:
    """``value`` as a float if it is a finite real number within the bounds (the module
    doc), else a ConfigError naming ``owner`` and ``name``."""
    if not isinstance(value, bool) and isinstance(value, _REALS):
        x = float(value)
        if (math.isfinite(x) and (x > low if low_open else x >= low)
                and (x < high if high_open else x <= high)):
            return x
    what = " ".join(p for p in ("a finite number", _range(low, high, low_open, high_open),
                                hint) if p)
    raise ConfigError(f"{owner}: {name} must be {what}, got {value!r}")


def integer(owner: str, name: str, value: object, *, low: int = 0, high: int | None = None,
            hint: str = "") -> int:
    """``value`` as an int if it is an integer (not a bool) in ``[low, high]`` (the module
    doc), else a ConfigError naming ``owner`` and ``name``."""
    if not isinstance(value, bool) and isinstance(value, _INTEGERS):
        n = int(value)
        if n >= low and (high is None or n <= high):
            return n
    bounds = f">= {low}" if high is None else f"in [{low}, {high}]"
    what = " ".join(p for p in ("an integer", bounds, hint) if p)
    raise ConfigError(f"{owner}: {name} must be {what}, got {value!r}")


def flag(owner: str, name: str, value: object) -> bool:
    """``value`` if it is a bool, else a ConfigError naming ``owner`` and ``name``."""
    if isinstance(value, bool):
        return value
    raise ConfigError(f"{owner}: {name} must be true or false, got {value!r}")


def _range(low: float, high: float, low_open: bool, high_open: bool) -> str:
    """``>= 0``, ``< 1``, ``in (0, 1]`` ...; empty when neither bound is finite."""
    has_low, has_high = low > -math.inf, high < math.inf
    if has_low and has_high:
        return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if has_low:
        return f"{'>' if low_open else '>='} {low:g}"
    if has_high:
        return f"{'<' if high_open else '<='} {high:g}"
    return ""
