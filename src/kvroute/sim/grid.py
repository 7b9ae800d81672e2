"""A grid of simulator runs (workloads x orders x loads x evictions x routings x seeds).

Each cell is one ``simulate`` call in a worker process; each (workload, order, seed) also
gets one ceilings task (infinite cache and pooled optimum on the workload's nominal order:
arrival order for open loops, turn by turn for closed loops). Results come back as plain
dicts: the run's summary plus its sorted TTFT and E2E samples for CDFs.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from kvroute.sim.cluster import SimConfig, check_fits, request_ceilings, simulate
from kvroute.sim.load import build_at_load
from kvroute.workloads.catalog import build_workload
from kvroute.workloads.request import ClosedLoop, Request

__all__ = ["Case", "Cell", "Grid", "GridInterrupted", "run_grid"]

Case = tuple[str, str | None, int, float | None]  # workload, order, seed, load


@dataclass(frozen=True)
class Cell:
    workload: str
    order: str | None  # GSP arrival order; None for other workloads
    eviction: str
    routing: str
    seed: int
    load: float | None = None  # offered load (kvroute.sim.load); None: the workload's rate

    @property
    def case(self) -> Case:
        return (self.workload, self.order, self.seed, self.load)

    @property
    def label(self) -> str:
        wl = self.workload + (f"/{self.order}" if self.order else "")
        at = f" @{self.load:g}" if self.load is not None else ""
        return f"{wl}{at} {self.eviction}+{self.routing} s{self.seed}"


@dataclass(frozen=True)
class Grid:
    workloads: tuple[str, ...] = ("gsp",)
    orders: tuple[str, ...] = ("random",)  # applied to gsp only
    evictions: tuple[str, ...] = ("lru", "rlt")
    routings: tuple[str, ...] = ("round_robin", "lbgr")
    seeds: tuple[int, ...] = (1,)
    loads: tuple[float | None, ...] = (None,)  # None: each workload's own rate (or load option)
    sim: SimConfig = field(default_factory=SimConfig)
    workload_options: dict[str, dict[str, Any]] = field(default_factory=dict)  # per workload
    eviction_args: dict[str, dict[str, Any]] = field(default_factory=dict)  # per policy
    routing_args: dict[str, dict[str, Any]] = field(default_factory=dict)  # per policy
    sources: dict[str, dict[str, str]] = field(default_factory=dict)  # dataset/trace files

    def cells(self) -> Iterator[Cell]:
        for wl in self.workloads:
            for order in (self.orders if wl == "gsp" else (None,)):
                for load in self.loads:
                    for seed in self.seeds:
                        for ev in self.evictions:
                            for ro in self.routings:
                                yield Cell(wl, order, ev, ro, seed, load)

    def cases(self) -> list[Case]:
        return list(dict.fromkeys(c.case for c in self.cells()))

    def workload(self, name: str, order: str | None, seed: int,
                 load: float | None = None) -> Any:
        """The workload of a case; a grid load (or a ``load`` option) sets its rate."""
        opts = dict(self.workload_options.get(name, {}))
        if order is not None:
            opts["order"] = order
        option_load = opts.pop("load", None)
        load = load if load is not None else option_load
        if load is None:
            return build_workload(name, seed, **self.sources.get(name, {}), **opts)
        return build_at_load(name, seed, float(load), self.sim.step_model(), self.sim.speed_sum,
                             self.sim.chunk_size, self.sim.capacity,
                             **self.sources.get(name, {}), **opts)[0]

    def check_fits(self) -> None:
        """Every request of every case fits one worker's KV pool (the simulator refuses one
        that does not): checked before the grid runs, not when a cell reaches it."""
        capacity = self.sim.capacity or self.sim.step_model().kv_pool_tokens
        for name, order, seed in dict.fromkeys(c[:3] for c in self.cases()):
            # the load sets the rate, not the lengths
            check_fits(self.workload(name, order, seed), capacity, name)


def _run_cell(grid: Grid, cell: Cell) -> dict[str, Any]:
    wl = grid.workload(cell.workload, cell.order, cell.seed, cell.load)
    cfg = replace(grid.sim, eviction=cell.eviction, routing=cell.routing, seed=cell.seed,
                  eviction_args=grid.eviction_args.get(cell.eviction, {}),
                  routing_args=grid.routing_args.get(cell.routing, {}))
    res = simulate(wl, cfg)
    return {"cell": cell, "summary": res.summary(), "capacity": res.capacity,
            "source": str(wl.meta.get("source", "")),  # "synthetic" when made up, no dataset
            "ttft": np.sort(res.records.ttft), "e2e": np.sort(res.records.e2e)}


def _run_ceilings(grid: Grid, case: Case
                  ) -> dict[str, Any]:
    wl = grid.workload(*case)
    reqs: Iterable[Request] = wl  # open loop: read once, lazily
    if isinstance(wl, ClosedLoop):
        reqs = sorted(wl, key=lambda r: (r.turn, r.session))
    capacity = grid.sim.capacity or grid.sim.step_model().kv_pool_tokens
    ceil = request_ceilings(reqs, capacity, grid.sim.workers)
    return {"case": case, "infinite": ceil.infinite, "optimal": ceil.optimal}


class GridInterrupted(Exception):
    """Raised by :func:`run_grid` on an interrupt (Ctrl-C): ``runs`` and ``ceilings`` hold
    what had finished (runs in grid order), so that a long grid's results are not lost."""

    def __init__(self, runs: list[dict[str, Any]], ceilings: dict[Case, dict[str, float]],
                 total: int) -> None:
        super().__init__(f"interrupted after {len(runs)} of {total} runs")
        self.runs, self.ceilings, self.total = runs, ceilings, total


def run_grid(grid: Grid, jobs: int | None = None, ceilings: bool = True,
             progress: Callable[[int, int], None] | None = None,
             executor: Executor | None = None
             ) -> tuple[list[dict[str, Any]], dict[Case, dict[str, float]]]:
    """Run every cell (and ceilings); return the runs in grid order and ceilings by case.
    ``executor`` (e.g. Ray's, :mod:`kvroute.integrations.ray_grid`) replaces the process
    pool of ``jobs`` processes; it is shut down at the end. Every request must fit a
    worker's pool (:meth:`Grid.check_fits`, before anything runs); an interrupt raises
    :class:`GridInterrupted` with what had finished."""
    grid.check_fits()
    cells = list(grid.cells())
    cases = grid.cases() if ceilings else []
    total = len(cells) + len(cases)
    jobs = max(1, min(jobs or os.cpu_count() or 1, total))
    runs: dict[Cell, dict[str, Any]] = {}
    ceils: dict[Case, dict[str, float]] = {}

    def collect(out: dict[str, Any]) -> None:
        if "cell" in out:
            runs[out["cell"]] = out
        else:
            ceils[out["case"]] = {"infinite": out["infinite"], "optimal": out["optimal"]}
        if progress is not None:
            progress(len(runs) + len(ceils), total)

    try:
        if jobs == 1 and executor is None:
            for case in cases:
                collect(_run_ceilings(grid, case))
            for cell in cells:
                collect(_run_cell(grid, cell))
        else:
            pool = executor or ProcessPoolExecutor(max_workers=jobs)
            pending: set[Future[dict[str, Any]]] = set()
            try:
                pending |= {pool.submit(_run_ceilings, grid, case) for case in cases}
                pending |= {pool.submit(_run_cell, grid, cell) for cell in cells}
                while pending:
                    finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in finished:
                        collect(fut.result())
            finally:  # on an interrupt, do not wait for the runs not yet started
                pool.shutdown(wait=not pending, cancel_futures=True)
    except KeyboardInterrupt:
        raise GridInterrupted([runs[c] for c in cells if c in runs], ceils,
                              len(cells)) from None
    return [runs[c] for c in cells], ceils
