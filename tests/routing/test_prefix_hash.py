"""prefix_hash: a stable consistent-hash ring on the first 256 units, with a load guard."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from kvroute.errors import ConfigError
from kvroute.routing.base import ClusterView, RouteRequest, WorkerState
from kvroute.routing.prefix_hash import PrefixHash
from kvroute.routing.registry import make_router_policy


def view(loads: list[int]) -> ClusterView:
    return ClusterView([WorkerState(i, in_flight=x) for i, x in enumerate(loads)], None)


def prompts(count: int, length: int = 300, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 50_000, length) for _ in range(count)]


def test_defaults_and_registry() -> None:
    """Defaults: 256 prefix units, 160 virtual nodes per worker, load factor 1.25."""
    pol = make_router_policy("prefix_hash")
    assert isinstance(pol, PrefixHash) and not pol.uses_index
    assert (pol.prefix_units, pol.virtual_nodes, pol.load_factor) == (256, 160, 1.25)


def test_same_prefix_same_worker() -> None:
    """Prompts sharing their first 256 units go to one worker, whatever follows or the seed."""
    rng = np.random.default_rng(5)
    head = rng.integers(0, 50_000, 256)
    a, b = PrefixHash(seed=0), PrefixHash(seed=99)
    v = view([0, 0, 0, 0])
    chosen = {pol.route(RouteRequest(np.concatenate([head, rng.integers(0, 50_000, k)])),
                        v).worker for pol in (a, b) for k in (0, 1, 10, 500)}
    assert len(chosen) == 1


def test_units_past_the_prefix_are_ignored_but_inside_count() -> None:
    """Changing unit 256 keeps the key; changing unit 255 changes it (for most prompts)."""
    pol = PrefixHash()
    same = moved = 0
    for p in prompts(200, seed=1):
        q, r = p.copy(), p.copy()
        q[256] += 1
        r[255] += 1
        assert pol.owner(q, 8) == pol.owner(p, 8)
        same += pol.owner(r, 8) == pol.owner(p, 8)
        moved += pol.owner(r, 8) != pol.owner(p, 8)
    assert moved > 150  # about 7/8 of 200 land on another worker


def test_different_prompts_spread() -> None:
    """2,000 distinct prompts on 4 idle workers: each worker gets 15%..35% of them."""
    pol, v = PrefixHash(), view([0, 0, 0, 0])
    counts = np.bincount([pol.route(RouteRequest(p), v).worker for p in prompts(2000)],
                         minlength=4)
    assert counts.sum() == 2000
    assert (counts > 300).all() and (counts < 700).all()


def test_stable_across_processes() -> None:
    """Owners are the same in a fresh interpreter with another hash salt (no built-in hash())."""
    here = [PrefixHash().owner(p, 5) for p in prompts(20, seed=3)]
    code = ("import numpy as np; from kvroute.routing.prefix_hash import PrefixHash; "
            "rng = np.random.default_rng(3); "
            "print([PrefixHash().owner(rng.integers(0, 50_000, 300), 5) for _ in range(20)])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONHASHSEED": "12345"}).stdout
    assert out.strip() == str(here)


def test_overload_falls_back_to_least_loaded() -> None:
    """n=4, total 15: bound 1.25*16/4 = 5; owner at 5 keeps it, owner at 6 loses it."""
    pol = PrefixHash()
    p = prompts(1, seed=7)[0]
    w = pol.owner(p, 4)
    others = [i for i in range(4) if i != w]
    loads = [0] * 4
    loads[w] = 5
    loads[others[0]], loads[others[1]], loads[others[2]] = 4, 3, 3
    d = pol.route(RouteRequest(p), view(loads))
    assert (d.worker, d.branch) == (w, "owner")
    loads[w] = 6
    loads[others[0]], loads[others[1]], loads[others[2]] = 4, 3, 2
    d = pol.route(RouteRequest(p), view(loads))
    assert (d.worker, d.branch) == (others[2], "overload")
    loads[others[1]] = 2  # two least loaded at 2: the lower index wins
    d = pol.route(RouteRequest(p), view(loads))
    assert (d.worker, d.branch) == (min(others[1], others[2]), "overload")


def test_ring_rebuilds_and_is_consistent() -> None:
    """Going 4 -> 5 workers moves keys only onto the new worker, about 1/5 of them."""
    pol = PrefixHash()
    ps = prompts(1000, seed=2)
    four = [pol.route(RouteRequest(p), view([0] * 4)).worker for p in ps]
    pol.on_workers_changed(5)
    five = [pol.route(RouteRequest(p), view([0] * 5)).worker for p in ps]
    moved = [b for a, b in zip(four, five, strict=True) if a != b]
    assert set(moved) == {4}
    assert 120 < len(moved) < 280
    # lazily back to 4 when the view shrinks: the original owners again
    assert [pol.route(RouteRequest(p), view([0] * 4)).worker for p in ps] == four


def test_single_worker_and_short_prompts() -> None:
    """One worker always wins; prompts shorter than 256 units (even empty) hash fine."""
    pol = PrefixHash()
    assert pol.route(RouteRequest(np.array([], dtype=np.int64)), view([3])).worker == 0
    assert pol.route(RouteRequest(np.array([1, 2])), view([0, 0, 0])).worker in (0, 1, 2)


@pytest.mark.parametrize("kwargs", [
    {"prefix_units": 0}, {"virtual_nodes": 0}, {"virtual_nodes": 1.5},
    {"load_factor": 0.9}, {"load_factor": float("nan")},
])
def test_bad_parameters_raise(kwargs: dict[str, float]) -> None:
    """Out-of-range parameters raise ConfigError naming the parameter."""
    with pytest.raises(ConfigError, match=next(iter(kwargs))):
        PrefixHash(**kwargs)  # type: ignore[arg-type]
