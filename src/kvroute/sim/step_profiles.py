"""Step-time profiles: the shipped JSON files in ``kvroute/profiles/`` and files of your own.

A profile file holds one :class:`~kvroute.sim.step_model.StepModel`'s coefficients with
their source (schema: ``docs/calibration.md``)::

    {"name": ..., "gpu": ..., "model": ..., "date": ..., "kind": one of PROFILE_KINDS,
     "source": ..., "notes": ..., "coefficients": {<COEFFICIENT_KEYS>, "overhead_ms"?}}

:func:`load_profile` needs only ``name`` and the six required coefficients; every error in a
file is a :class:`~kvroute.errors.ConfigError` naming the file (an unknown profile name is
an :class:`~kvroute.errors.UnknownNameError` listing the shipped ones).
:func:`profile_record` writes the same schema back.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from kvroute.errors import ConfigError, UnknownNameError
from kvroute.sim.step_model import COEFFICIENT_KEYS, OPTIONAL_COEFFICIENT_KEYS, StepModel

__all__ = [
    "DEFAULT_PROFILE",
    "PROFILE_KINDS",
    "load_profile",
    "profile_names",
    "profile_record",
]

DEFAULT_PROFILE = "l40-llama3-8b"
PROFILE_KINDS = ("measured", "published", "roofline", "paper")


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
        if path.is_dir():
            raise ConfigError(f"profile {name_or_path!r} is a directory; pass a shipped "
                              f"profile name ({', '.join(names)}) or a profile JSON file")
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
    for key, fld in {**COEFFICIENT_KEYS, **OPTIONAL_COEFFICIENT_KEYS}.items():
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
