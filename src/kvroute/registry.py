"""One registry mechanism for every kind of policy (routing, eviction).

Contract:

* A :class:`Registry` holds the policy classes of one kind, by their ``name`` class
  attribute. A policy module registers its class with ``@registry.register``.
* Discovery: the first lookup imports every module of the registry's package (its
  ``__path__``; names starting with ``_`` are skipped), so adding one module that registers
  a policy is all it takes for every command line to offer it, and then the plugins
  (:mod:`kvroute.plugins`: modules outside the package, by ``--plugin``, the
  ``KVROUTE_PLUGINS`` environment variable or an entry point). There is no list of names
  anywhere else; a name registered twice is a ConfigError naming both modules.
* Capabilities are class attributes of the policy (``needs_future``, ``needs_probes``,
  ``uses_index``, ``takes_seed`` ...); ``names(attr=value, ...)`` filters on them, and
  ``require(name, reason, attr=value)`` refuses a policy that lacks one with a message
  built from the policy's ``describe_needs`` text.
* ``make(name, args, **context)`` builds a policy. ``args`` are the user's parameters
  (from ``--policy-arg KEY=VALUE``: strings are converted to the type of the parameter's
  default); a key the constructor does not take, a value of the wrong type, or one the
  policy rejects is a :class:`~kvroute.errors.ConfigError` naming the policy, the key and
  the parameters it does take. ``context`` are the caller's own arguments (``seed``,
  ``requests``); ``seed`` is passed only to a policy with ``takes_seed``.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, TypeVar

from kvroute.errors import ConfigError, UnknownNameError
from kvroute.plugins import load_plugins

__all__ = ["Registry", "parse_policy_args"]

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, package: str) -> None:
        self.kind = kind  # "routing policy", "eviction policy": used in messages
        self._package = package
        self._classes: dict[str, type[T]] = {}
        self._discovered = False

    def register(self, cls: type[T]) -> type[T]:
        """Class decorator: make ``cls`` available under ``cls.name``."""
        name = getattr(cls, "name", "")
        if not name:
            raise ConfigError(f"{self.kind} {cls.__module__}.{cls.__qualname__} has no name")
        other = self._classes.get(name, cls)
        if other is not cls:
            raise ConfigError(f"{self.kind} name {name!r} is taken: {other.__module__} and "
                              f"{cls.__module__} both register it")
        self._classes[name] = cls
        return cls

    def _discover(self) -> None:
        if self._discovered:
            return
        self._discovered = True
        pkg = importlib.import_module(self._package)
        for mod in pkgutil.iter_modules(pkg.__path__):
            if not mod.name.startswith("_"):
                importlib.import_module(f"{self._package}.{mod.name}")
        load_plugins()

    def names(self, **capabilities: Any) -> list[str]:
        """Registered names, sorted; only those whose class attributes equal ``capabilities``."""
        self._discover()
        return sorted(n for n, cls in self._classes.items()
                      if all(getattr(cls, k) == v for k, v in capabilities.items()))

    def get(self, name: str) -> type[T]:
        self._discover()
        try:
            return self._classes[name]
        except KeyError:
            raise UnknownNameError(f"unknown {self.kind} {name}; choose from: "
                                   f"{', '.join(self.names())}") from None

    def require(self, name: str, where: str, **capabilities: Any) -> type[T]:
        """The class of ``name``, or a ConfigError saying why it cannot run ``where``."""
        cls = self.get(name)
        for key, want in capabilities.items():
            if getattr(cls, key) != want:
                need = getattr(cls, "describe_needs", "") or f"{key}={getattr(cls, key)}"
                ok = ", ".join(self.names(**capabilities))
                raise ConfigError(f"{self.kind} {name!r} cannot run {where}: it {need}; "
                                  f"choose from: {ok}")
        return cls

    def parameters(self, name: str) -> dict[str, inspect.Parameter]:
        """The parameters a user may set (the constructor's, without ``self`` and ``seed``)."""
        sig = inspect.signature(self.get(name).__init__)
        return {k: p for k, p in sig.parameters.items()
                if k not in ("self", "seed") and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}

    def args_for(self, names: Iterable[str], args: Mapping[str, str],
                 flag: str = "--policy-arg") -> dict[str, dict[str, str]]:
        """Each policy's share of ``args``: ``POLICY.KEY`` goes to that policy only, a plain
        ``KEY`` to every one of ``names`` that takes it (an error if none does)."""
        chosen = list(names)
        out: dict[str, dict[str, str]] = {n: {} for n in chosen}
        for key, value in args.items():
            owner, dot, sub = key.rpartition(".")
            if dot:
                if owner not in out:
                    raise ConfigError(f"{flag} {key}={value}: {owner!r} is not one of the "
                                      f"chosen policies ({', '.join(chosen)})")
                out[owner][sub] = value
                continue
            takers = [n for n in chosen if key in self.parameters(n)]
            if not takers and len(chosen) > 1:
                raise ConfigError(f"{flag} {key}={value}: none of {', '.join(chosen)} takes "
                                  f"{key!r}")
            for n in takers or chosen:  # one policy that does not take it: make() explains
                out[n].setdefault(key, value)
        return out

    def make(self, name: str, args: Mapping[str, Any] | None = None, **context: Any) -> T:
        """Build the policy ``name`` with the user's ``args`` and the caller's ``context``."""
        cls = self.get(name)
        params = self.parameters(name)
        kwargs: dict[str, Any] = {}
        for key, value in (args or {}).items():
            if key not in params:
                takes = ", ".join(f"{k}={_default(p)}" for k, p in params.items()) or "none"
                raise ConfigError(f"{self.kind} {name!r} does not take {key!r}; "
                                  f"its parameters: {takes}")
            kwargs[key] = _convert(name, key, value, params[key])
        if "seed" in context and not getattr(cls, "takes_seed", True):
            context = {k: v for k, v in context.items() if k != "seed"}
        try:
            return cls(**context, **kwargs)
        except ConfigError:
            raise
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"bad parameters for {self.kind} {name!r}: {exc}") from None


def _default(p: inspect.Parameter) -> str:
    return "(required)" if p.default is p.empty else repr(p.default)


def _convert(policy: str, key: str, value: Any, p: inspect.Parameter) -> Any:
    """A command-line string converted to the type of the parameter's default."""
    if not isinstance(value, str) or p.default is p.empty or p.default is None:
        return value
    kind = type(p.default)
    conv: Callable[[str], Any]
    if kind is bool:
        conv = _bool
    elif kind in (int, float):
        conv = kind
    else:
        return value
    try:
        return conv(value)
    except ValueError:
        raise ConfigError(f"{policy}: {key} must be {kind.__name__}, got {value!r}") from None


def _bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ValueError(text)


def parse_policy_args(items: Iterable[str] | None, flag: str = "--policy-arg") -> dict[str, str]:
    """``["k=v", ...]`` as a dict; a malformed item is a ConfigError naming ``flag``."""
    out: dict[str, str] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{flag} takes KEY=VALUE, got {item!r}")
        out[key.strip()] = value.strip()
    return out
