"""Policies from outside the package (``kvroute.plugins``): a file, a module, an entry point.

Loading a plugin registers its policies in this process for good, so the runs that load
a working plugin are separate processes; the failures register nothing and run here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from kvroute import plugins
from kvroute.cli import main
from kvroute.errors import ConfigError
from kvroute.registry import Registry

EXAMPLE = Path(__file__).parents[1] / "examples" / "plugin_policies.py"


@pytest.fixture
def no_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    """No plugin named or loaded in this process; both restored after the test."""
    monkeypatch.setenv(plugins.PLUGINS_ENV, "")  # restored (unset) after the test
    monkeypatch.setattr(plugins, "_loaded", set())


def _kvroute(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    src = str(Path(plugins.__file__).parents[1])
    full_env = {**os.environ, "PYTHONPATH": src, **(env or {})}
    done = subprocess.run([sys.executable, "-m", "kvroute", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_plugin_file_adds_a_routing_and_an_eviction_policy(tmp_path: Path) -> None:
    """``--plugin FILE`` (the example): its policies run in ``sim``, take their
    parameters, and are listed in the help (the flag before or after the command)."""
    out = tmp_path / "run.json"
    _kvroute(["--plugin", str(EXAMPLE), "sim", "--routing", "capped_affinity",
              "--policy-arg", "cap=2", "--eviction", "largest_leaf", "--workload", "gsp",
              "--groups", "4", "--prompts-per-group", "4", "--no-ceilings", "--json",
              str(out)], tmp_path)
    run = json.loads(out.read_text())["runs"][0]
    config = run["config"]
    assert (config["routing"], config["eviction"]) == ("capped_affinity", "largest_leaf")
    assert config["routing_args"] == {"cap": "2"}
    assert run["summary"]["requests"] == 16
    assert "capped_affinity" in _kvroute(["sim", "--plugin", str(EXAMPLE), "--help"],
                                         tmp_path)


def test_the_environment_names_plugins_for_the_processes_kvroute_starts(
        tmp_path: Path) -> None:
    """``KVROUTE_PLUGINS`` (a module on the path): ``compare --jobs 2`` runs the plugin's
    policies in its worker processes."""
    out = _kvroute(["compare", "--workloads", "gsp", "--routings",
                    "capped_affinity,round_robin", "--evictions", "largest_leaf",
                    "--seeds", "1,2", "--jobs", "2", "--no-ceilings", "-o", "gsp.groups=4",
                    "-o", "gsp.prompts_per_group=4"],
                   tmp_path, {plugins.PLUGINS_ENV: "plugin_policies",
                              "PYTHONPATH": os.pathsep.join(
                                  [str(EXAMPLE.parent), str(Path(plugins.__file__).parents[1])])})
    assert "capped_affinity" in out and "round_robin" in out and "largest_leaf" in out


@pytest.mark.usefixtures("no_plugins")
@pytest.mark.parametrize(("write", "spec", "needle"), [
    (None, "missing.py", "missing.py: no such file"),
    ("raise RuntimeError('boom')\n", "broken.py", "broken.py failed to import: "
                                                  "RuntimeError: boom"),
    (None, "no_such_module_here", "'no_such_module_here' (KVROUTE_PLUGINS) failed to "
                                  "import: ModuleNotFoundError"),
])
def test_a_plugin_that_cannot_load_is_a_one_line_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], write: str | None, spec: str,
        needle: str) -> None:
    if write is not None:
        (tmp_path / spec).write_text(write)
    target = str(tmp_path / spec) if spec.endswith(".py") else spec
    assert main(["--plugin", target, "sim", "--routing", "round_robin"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kvroute: error: plugin ") and needle in err


@pytest.mark.usefixtures("no_plugins")
def test_entry_points_are_loaded_once_and_their_errors_named(
        monkeypatch: pytest.MonkeyPatch) -> None:
    loads: list[str] = []

    def point(name: str, fail: bool = False) -> SimpleNamespace:
        def load() -> None:
            loads.append(name)
            if fail:
                raise ImportError("no numpy here")
        return SimpleNamespace(name=name, value=f"pkg.{name}", load=load)

    monkeypatch.setattr(plugins, "entry_points", lambda group: [point("good")])
    plugins.load_plugins()
    plugins.load_plugins()
    assert loads == ["good"]
    monkeypatch.setattr(plugins, "entry_points", lambda group: [point("bad", fail=True)])
    with pytest.raises(ConfigError, match=r"plugin entry point bad = pkg.bad \(group "
                                          r"kvroute.plugins\) failed to load: ImportError"):
        plugins.load_plugins()


def test_a_name_registered_twice_names_both_modules() -> None:
    reg: Registry[object] = Registry("toy policy", "kvroute.routing")
    first = type("First", (), {"name": "twin", "__module__": "pkg.one"})
    second = type("Second", (), {"name": "twin", "__module__": "pkg.two"})
    reg.register(first)
    with pytest.raises(ConfigError, match=r"toy policy name 'twin' is taken: pkg\.one and "
                                          r"pkg\.two both register it"):
        reg.register(second)
    with pytest.raises(ConfigError, match="has no name"):
        reg.register(type("Nameless", (), {"name": ""}))
