"""Summaries of a load-generator run, with the simulator's metric definitions.

* Latencies, duration and throughput are those of :class:`kvroute.sim.records.Records`
  over the requests that succeeded, with the client's send time as the arrival: TTFT =
  first token - sent, E2E = finish - sent, duration = first send to last completion.
  TPOT = (E2E - TTFT) / (output tokens - 1) over requests with more than one token.
* Client hit rate = cached / prompt tokens over the successful requests whose usage
  reported ``cached_tokens`` (None when none did).
* Cluster hit rate = the increase of the workers' cached-token counter over the increase
  of their prompt-token counter between the scrapes before and after the run, summed over
  the ``--metrics-url`` endpoints (:func:`kvroute.bench.scrape.metrics_hit_rate`).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from kvroute.bench.results import BenchRun, RequestResult
from kvroute.bench.scrape import metrics_hit_rate
from kvroute.sim.records import Records, latency_stats

__all__ = ["summarize"]


def _records(ok: list[RequestResult], workers: dict[str | None, int]) -> Records:
    return Records.from_rows([
        (r.rid, r.session, workers[r.worker], r.sent, r.sent, r.first_token, r.finish,
         r.prompt_tokens, r.cached_tokens or 0, r.output_tokens) for r in ok])


def summarize(run: BenchRun, workload: str = "", url: str = "") -> dict[str, Any]:
    """The run's summary (JSON-ready; None where a quantity is unknown)."""
    results = run.results
    ok = [r for r in results if r.ok]
    failed = [r for r in results if not r.ok]
    names = list(dict.fromkeys(r.worker for r in results))
    workers = {w: k for k, w in enumerate(names)}
    rec = _records(ok, workers)
    base = rec.summary(0)
    reported = [r for r in ok if r.cached_tokens is not None]
    rep_prompt = sum(r.prompt_tokens for r in reported)
    multi = [r for r in ok if r.output_tokens > 1]
    tpot = np.array([(r.e2e - r.ttft) / (r.output_tokens - 1) for r in multi])
    per_worker = []
    for w in names:
        mine = [r for r in results if r.worker == w]
        mine_rep = [r for r in mine if r.ok and r.cached_tokens is not None]
        prompt = sum(r.prompt_tokens for r in mine_rep)
        per_worker.append({
            "worker": w, "requests": len(mine), "ok": sum(r.ok for r in mine),
            "hit_rate": (sum(r.cached_tokens or 0 for r in mine_rep) / prompt
                         if prompt else None)})
    cluster = metrics_hit_rate(run.metrics_before, run.metrics_after)

    def nan_none(x: float) -> float | None:
        return None if x != x else x

    client_hit = (sum(r.cached_tokens or 0 for r in reported) / rep_prompt
                  if rep_prompt else None)
    return {
        "workload": workload, "url": url, "model": run.model, "mode": run.mode,
        "concurrency": run.concurrency,
        "requests_planned": run.planned, "requests_sent": len(results),
        "requests_ok": len(ok), "requests_failed": len(failed),
        "requests_unsent": run.unsent,
        "failures": dict(Counter(r.reason or "?" for r in failed).most_common()),
        "duration_s": base["duration_s"], "wall_s": run.wall_s,
        "throughput_rps": nan_none(base["throughput_rps"]),
        "prompt_tps": nan_none(base["prompt_tps"]), "output_tps": nan_none(base["output_tps"]),
        "prompt_tokens": base["prompt_tokens"], "output_tokens": base["output_tokens"],
        "cached_tokens": sum(r.cached_tokens or 0 for r in reported),
        "usage_reported": sum(r.usage for r in ok), "cached_reported": len(reported),
        "hit_rate_client": client_hit,
        "hit_rate_cluster": cluster["hit_rate"], "cluster": cluster,
        # the key kvroute sim uses: the engines' own count when scraped, else the client's
        "hit_rate": cluster["hit_rate"] if cluster["hit_rate"] is not None else client_hit,
        "ttft_s": {k: nan_none(v) for k, v in latency_stats(rec.ttft).items()},
        "e2e_s": {k: nan_none(v) for k, v in latency_stats(rec.e2e).items()},
        "tpot_s": {k: nan_none(v) for k, v in latency_stats(tpot).items()},
        "per_worker": per_worker,
    }
