"""Summaries of a load-generator run, with the simulator's metric definitions.

* Latencies, duration and throughput are those of :class:`kvroute.sim.records.Records`
  over the requests that succeeded, with the client's send time as the arrival: TTFT =
  first token - sent, E2E = finish - sent, duration = first send to last completion.
  TPOT = (E2E - TTFT) / (output tokens - 1) over requests with more than one token.
* Client hit rate = cached / prompt tokens over the successful requests whose usage
  reported ``cached_tokens`` (None when none did).
* Cluster hit rate = the increase of the workers' cached-token counter over the increase
  of their prompt-token counter between the scrapes before and after the run, summed over
  the ``--metrics-url`` endpoints: SGLang ``sglang:cached_tokens_total`` /
  ``sglang:prompt_tokens_total``, else vLLM ``vllm:prefix_cache_hits_total`` /
  ``vllm:prefix_cache_queries_total``.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from kvroute.bench.loadgen import BenchRun, RequestResult
from kvroute.sim.records import Records, latency_stats

__all__ = ["CACHE_COUNTERS", "cache_counters", "metrics_hit_rate", "summarize"]

# engine -> (cached-token counter, prompt-token counter), without the _total suffix
CACHE_COUNTERS: dict[str, tuple[str, str]] = {
    "sglang": ("sglang:cached_tokens", "sglang:prompt_tokens"),
    "vllm": ("vllm:prefix_cache_hits", "vllm:prefix_cache_queries"),
}
_WANTED = frozenset(n for pair in CACHE_COUNTERS.values() for n in pair)


def cache_counters(text: str) -> dict[str, float]:
    """The prefix-cache counters in Prometheus ``text``, summed over label sets."""
    from kvroute.server.engine_metrics import samples

    return {name: sum(values) for name, values in samples(text, _WANTED).items()}


def metrics_hit_rate(before: dict[str, dict[str, float] | str],
                     after: dict[str, dict[str, float] | str]) -> dict[str, Any]:
    """Cluster hit rate from counter deltas, per endpoint and in total."""
    per_url: list[dict[str, Any]] = []
    cached_sum = prompt_sum = 0.0
    for url in after.keys() | before.keys():
        a, b = after.get(url), before.get(url)
        if not isinstance(a, dict) or not isinstance(b, dict):
            bad = a if isinstance(a, str) else b
            per_url.append({"url": url, "error": bad or "not scraped"})
            continue
        engine = next((e for e, (_, p) in CACHE_COUNTERS.items() if p in a), None)
        if engine is None:
            per_url.append({"url": url, "error": "no prefix-cache counters "
                            "(sglang:cached_tokens_total or vllm:prefix_cache_hits_total)"})
            continue
        c_name, p_name = CACHE_COUNTERS[engine]
        deltas = []
        for name in (c_name, p_name):
            d = a.get(name, 0.0) - b.get(name, 0.0)
            deltas.append(d if d >= 0 else a.get(name, 0.0))  # a restart reset the counter
        cached, prompt = deltas
        cached_sum += cached
        prompt_sum += prompt
        per_url.append({"url": url, "engine": engine, "cached_tokens": cached,
                        "prompt_tokens": prompt,
                        "hit_rate": cached / prompt if prompt > 0 else None})
    per_url.sort(key=lambda r: r["url"])
    return {"hit_rate": cached_sum / prompt_sum if prompt_sum > 0 else None,
            "cached_tokens": cached_sum, "prompt_tokens": prompt_sum, "per_url": per_url}


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
