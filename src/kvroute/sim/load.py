"""Load as utilisation: the arrival rate at which a workload offers RHO x a cluster's capacity.

A request's *offered work* is the time one worker spends on it when nothing is cached and
steps are full (the step-time formula of :mod:`kvroute.sim.step_model`):

* prefill: its prompt of ``P`` tokens in chunks of ``chunk_size`` tokens, each chunk of
  ``n`` new tokens on ``h`` earlier ones priced as one step of its own,
  ``step_time(n, prefill_pairs(n, h), 0)`` (so the floor ``T_w`` is paid per chunk);
* decode: its ``output_len - 1`` further tokens, each its share of a decode step whose
  batch ``B`` is as large as the KV pool allows for such requests,
  ``B = max(1, pool // (P + output_len))``: ``max(T_w, T0 + b*B) / B + g * context`` ms,
  with the context growing from ``P + 1`` (``pool``: the worker's KV pool in tokens).

The workload's mean work per request ``W`` (seconds, over all its requests) and ``M``
workers give a capacity of ``M / W`` requests/s; load ``rho`` is the rate ``rho * M / W``.
With workers of different speeds (``SimConfig.speeds``) ``M`` is the sum of their speeds.
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
from kvroute.workloads.request import OpenLoop, Workload

__all__ = ["ABOVE_ONE", "arrival_line", "build_at_load", "check_load", "offered_work_s",
           "rate_for_load", "rate_line"]

CLOSED_LOOP_WORKLOADS = ("sharegpt", "ultrachat")


#: what a load above 1 means for the numbers a run gives (printed with such a load)
ABOVE_ONE = ("a load above 1 offers more work than the cluster can do without cache hits; "
             "where hits do not make up the difference, queues grow for the whole run and "
             "its latencies depend on its length")


def rate_line(rho: float, rate: float) -> str:
    """The line the commands print for a load: its rate, and ``ABOVE_ONE`` above 1."""
    line = f"load {rho:g}: {rate:.3f} requests/s"
    return f"{line} ({ABOVE_ONE})" if rho > 1 else line


def arrival_line(workload: OpenLoop, model: StepModel, workers: float, chunk_size: int,
                 pool: int | None = None, hint: str = "") -> str:
    """For a workload replayed at its own arrival times (no ``--load``): its mean rate,
    ``(n - 1) / last arrival``, and the load that rate offers; above 1, ``ABOVE_ONE`` and
    ``hint`` (a trace whose clock is not in milliseconds shows as an absurd load)."""
    times = [r.arrival for r in workload]
    if len(times) < 2:
        return f"{len(times)} request: no arrival rate"
    span = times[-1] - times[0]
    head = (f"arrivals as given: {len(times):,} requests over "
            f"{f'{span:,.1f}' if span >= 1 else f'{span:.3g}'} s")
    if span <= 0:
        return f"{head} (all at once)"
    rate = (len(times) - 1) / span
    rho = rate / rate_for_load(workload, model, workers, 1.0, chunk_size, pool)
    line = f"{head}, {rate:.3f} requests/s: offered load {rho:.3g}"
    return f"{line} ({ABOVE_ONE}{'; ' + hint if hint else ''})" if rho > 1 else line


def offered_work_s(model: StepModel, prompt_len: int, output_len: int,
                   chunk_size: int, pool: int | None = None) -> float:
    """Seconds of one worker's time for a request with nothing cached (module doc);
    ``pool`` defaults to the model's ``kv_pool_tokens``."""
    if prompt_len < 1 or output_len < 1 or chunk_size < 1:
        raise ConfigError("prompt_len, output_len and chunk_size must be >= 1")
    ms = 0.0
    done = 0
    while done < prompt_len:
        n = min(chunk_size, prompt_len - done)
        ms += model.step_ms(n, prefill_pairs(n, done), 0.0)
        done += n
    extra = output_len - 1  # context P+1 .. P+extra
    batch = max(1, (pool or model.kv_pool_tokens) // (prompt_len + output_len))
    per_step = max(model.t_w_ms, model.t0_ms + model.b_ms * batch) / batch
    ms += extra * (per_step + model.g_ms * (prompt_len + 1 + (extra - 1) / 2.0))
    return ms * 0.001


def check_load(rho: object) -> float:
    """``rho`` as an offered load: a finite number > 0 (a fraction of capacity)."""
    if not (isinstance(rho, (int, float)) and math.isfinite(rho) and rho > 0):
        raise ConfigError(f"load must be a number > 0 (a fraction of capacity), got {rho!r}")
    return float(rho)


def rate_for_load(workload: Workload, model: StepModel, workers: float, rho: float,
                  chunk_size: int, pool: int | None = None) -> float:
    """Requests/s at which ``workload`` offers ``rho`` times the capacity of ``workers``
    (workers of ``model``'s speed: a mixed fleet counts the sum of its speeds)."""
    check_load(rho)
    if not (workers > 0 and math.isfinite(workers)):
        raise ConfigError(f"a load needs workers (or the sum of their speeds) > 0, got "
                          f"{workers!r}")
    works = [offered_work_s(model, r.prompt_len, r.output_len, chunk_size, pool)
             for r in workload]
    if not works:
        raise ConfigError(f"workload {workload.name!r} has no requests")
    return float(rho) * workers * len(works) / sum(works)


def build_at_load(name: str, seed: int, rho: float, model: StepModel, workers: float,
                  chunk_size: int, pool: int | None = None, **options: Any
                  ) -> tuple[Workload, float]:
    """Workload ``name`` (with ``options``, sources included) at load ``rho``; and its rate."""
    if options.get("rate") is not None:
        raise ConfigError(f"workload {name}: give a load or a rate, not both")
    if name in CLOSED_LOOP_WORKLOADS:
        if options.get("mode", "open") != "open":
            raise ConfigError(f"workload {name}: a load needs the open loop (mode open)")
        options = {**options, "mode": "open"}
        options.pop("concurrency", None)
    rate = rate_for_load(build_workload(name, seed, **options), model, workers, rho,
                         chunk_size, pool)
    return build_workload(name, seed, **options, rate=rate), rate
