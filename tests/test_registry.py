"""The one registry mechanism: discovery, capabilities, and user parameters."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from kvroute.errors import ConfigError, UnknownNameError
from kvroute.registry import Registry, parse_policy_args
from kvroute.routing.registry import ROUTING


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Registry[object]:
    """A package ``toypolicies`` with one registry and two policy modules on disk."""
    root = tmp_path / "toypolicies"
    root.mkdir()
    (root / "__init__.py").write_text(textwrap.dedent("""
        from kvroute.registry import Registry
        REG = Registry("toy policy", "toypolicies")
    """))
    (root / "alpha.py").write_text(textwrap.dedent("""
        from toypolicies import REG
        @REG.register
        class Alpha:
            name = "alpha"
            online = True
            describe_needs = ""
            def __init__(self, seed=0, width=3, ratio=0.5, greedy=False, label="x"):
                if width < 1:
                    raise ValueError(f"width must be >= 1, got {width}")
                self.seed, self.width, self.ratio, self.greedy = seed, width, ratio, greedy
    """))
    (root / "beta.py").write_text(textwrap.dedent("""
        from toypolicies import REG
        @REG.register
        class Beta:
            name = "beta"
            online = False
            takes_seed = False
            describe_needs = "needs to see the future"
            def __init__(self, requests=None, width=1):
                self.requests, self.width = requests, width
    """))
    (root / "_private.py").write_text("raise RuntimeError('never imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for mod in [m for m in sys.modules if m.split(".")[0] == "toypolicies"]:
        monkeypatch.delitem(sys.modules, mod)
    import toypolicies

    return toypolicies.REG  # type: ignore[no-any-return]


def test_modules_are_discovered_without_a_list(package: Registry[object]) -> None:
    """Dropping a module into the package is all it takes; _private modules are skipped."""
    assert package.names() == ["alpha", "beta"]
    assert package.names(online=True) == ["alpha"]


def test_require_explains_a_missing_capability(package: Registry[object]) -> None:
    """A policy without the capability a place needs is refused with its own reason."""
    with pytest.raises(ConfigError, match="'beta' cannot run online: it needs to see the "
                                          "future; choose from: alpha"):
        package.require("beta", "online", online=True)
    with pytest.raises(UnknownNameError, match="unknown toy policy gamma; choose from: "
                                               "alpha, beta"):
        package.get("gamma")


def test_string_arguments_take_the_type_of_the_default(package: Registry[object]) -> None:
    """Command-line strings become int, float and bool; other values pass unchanged."""
    pol = package.make("alpha", {"width": "7", "ratio": "0.25", "greedy": "true"}, seed=4)
    assert (pol.seed, pol.width, pol.ratio, pol.greedy) == (4, 7, 0.25, True)  # type: ignore[attr-defined]
    assert package.make("alpha", {"width": 2}).width == 2  # type: ignore[attr-defined]


@pytest.mark.parametrize(("args", "needle"), [
    ({"depth": "1"}, "'alpha' does not take 'depth'; its parameters: width=3, ratio=0.5"),
    ({"width": "wide"}, "alpha: width must be int, got 'wide'"),
    ({"greedy": "maybe"}, "greedy must be bool"),
    ({"width": "0"}, "bad parameters for toy policy 'alpha': width must be >= 1, got 0"),
])
def test_bad_arguments_are_one_line_errors(package: Registry[object], args: dict[str, str],
                                           needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        package.make("alpha", args)


def test_seed_only_for_policies_that_take_one(package: Registry[object]) -> None:
    """The caller's seed is dropped for a policy with takes_seed False."""
    assert package.make("beta", seed=3, requests=[1]).requests == [1]  # type: ignore[attr-defined]


def test_arguments_are_split_per_policy(package: Registry[object]) -> None:
    """POLICY.KEY goes to one policy and wins over a plain KEY, which goes to every chosen
    policy that takes it; a key no chosen policy takes is an error."""
    split = package.args_for(["alpha", "beta"], {"width": "2", "alpha.width": "5",
                                                 "ratio": "0.1"})
    assert split == {"alpha": {"width": "5", "ratio": "0.1"}, "beta": {"width": "2"}}
    with pytest.raises(ConfigError, match="none of alpha, beta takes 'depth'"):
        package.args_for(["alpha", "beta"], {"depth": "1"})
    with pytest.raises(ConfigError, match="'gamma' is not one of the chosen"):
        package.args_for(["alpha"], {"gamma.width": "1"})


def test_parse_policy_args() -> None:
    assert parse_policy_args(["a=1", " b = x=y "]) == {"a": "1", "b": "x=y"}
    with pytest.raises(ConfigError, match="--eviction-arg takes KEY=VALUE, got 'a'"):
        parse_policy_args(["a"], "--eviction-arg")


def test_routing_registry_lists_every_policy_module() -> None:
    """The routing registry finds every policy module of kvroute.routing by itself."""
    names = ROUTING.names()
    assert {"lbgr", "cache_aware", "round_robin", "random", "oracle"} <= set(names)
    assert "oracle" not in ROUTING.names(needs_probes=False)
