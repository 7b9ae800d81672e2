"""Load as utilisation: the arrival rate at which a workload offers RHO x a cluster's capacity.

A request's *offered work* is the time one worker spends on it when nothing is cached and
steps are full (the step-time formula of :mod:`kvroute.sim.step_model`):

* prefill: its prompt of ``P`` tokens in chunks of ``chunk_size`` tokens, each chunk of
  ``n`` new tokens on ``h`` earlier ones priced as one step of its own,
  ``step_time(n, prefill_pairs(n, h), 0)`` (so the floor ``T_w`` is paid per chunk);
* decode: its ``output_len - 1`` further tokens at their marginal cost in a large batch,
  ``b + g * context`` ms each (the floor is shared by the batch, so it is not charged),
  with the context growing from ``P + 1``.

The workload's mean work per request ``W`` (seconds, over all its requests) and ``M``
workers give a capacity of ``M / W`` requests/s; load ``rho`` is the rate ``rho * M / W``.
Cache hits only lower the real work, so ``rho`` is an upper bound on the true
utilisation; the knee of the latency curve sits where hits stop sparing enough work.

:func:`build_at_load` builds a workload once at its default rate to read its requests,
then again at the chosen rate (same seed: same prompts; only arrival times change). Chat
workloads switch to their open loop (a closed loop has no rate).
"""

from __future__ import annotations

import math
from typing import Any

from kvroute.errors import ConfigError
from kvroute.sim.step_model import StepModel, prefill_pairs
from kvroute.workloads.catalog import build_workload
from kvroute.workloads.request import Workload

__all__ = ["build_at_load", "offered_work_s", "rate_for_load"]

CLOSED_LOOP_WORKLOADS = ("sharegpt", "ultrachat")


def offered_work_s(model: StepModel, prompt_len: int, output_len: int,
                   chunk_size: int) -> float:
    """Seconds of one worker's time for a request with nothing cached (module doc)."""
    if prompt_len < 1 or output_len < 1 or chunk_size < 1:
        raise ConfigError("prompt_len, output_len and chunk_size must be >= 1")
    ms = 0.0
    done = 0
    while done < prompt_len:
        n = min(chunk_size, prompt_len - done)
        ms += model.step_ms(n, prefill_pairs(n, done), 0.0)
        done += n
    extra = output_len - 1  # context P+1 .. P+extra
    ms += extra * (model.b_ms + model.g_ms * (prompt_len + 1 + (extra - 1) / 2.0))
    return ms * 0.001


def rate_for_load(workload: Workload, model: StepModel, workers: int, rho: float,
                  chunk_size: int) -> float:
    """Requests/s at which ``workload`` offers ``rho`` times the capacity of ``workers``."""
    if not (isinstance(rho, (int, float)) and math.isfinite(rho) and rho > 0):
        raise ConfigError(f"load must be a number > 0 (a fraction of capacity), got {rho!r}")
    works = [offered_work_s(model, r.prompt_len, r.output_len, chunk_size) for r in workload]
    if not works:
        raise ConfigError(f"workload {workload.name!r} has no requests")
    return float(rho) * workers * len(works) / sum(works)


def build_at_load(name: str, seed: int, rho: float, model: StepModel, workers: int,
                  chunk_size: int, **options: Any) -> tuple[Workload, float]:
    """Workload ``name`` (with ``options``, sources included) at load ``rho``; and its rate."""
    if options.get("rate") is not None:
        raise ConfigError(f"workload {name}: give a load or a rate, not both")
    if name in CLOSED_LOOP_WORKLOADS:
        if options.get("mode", "open") != "open":
            raise ConfigError(f"workload {name}: a load needs the open loop (mode open)")
        options = {**options, "mode": "open"}
        options.pop("concurrency", None)
    rate = rate_for_load(build_workload(name, seed, **options), model, workers, rho,
                         chunk_size)
    return build_workload(name, seed, **options, rate=rate), rate
