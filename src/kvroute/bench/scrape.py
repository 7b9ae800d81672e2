"""The engines' prefix-cache counters, scraped from their Prometheus ``/metrics`` before
and after a run, and the cluster hit rate they give.

* :func:`scrape_metrics` reads each URL (``url`` itself when it names a path, else
  ``url/metrics``) and returns its counters, or why it could not read them (a string).
* The counters (:data:`CACHE_COUNTERS`, names from :mod:`kvroute.protocol.metric_names`,
  without ``_total``): SGLang ``sglang:cached_tokens`` / ``sglang:prompt_tokens``, else
  vLLM ``vllm:prefix_cache_hits`` / ``vllm:prefix_cache_queries``; summed over label sets.
* :func:`metrics_hit_rate`: the increase of the cached-token counter over the increase of
  the prompt-token counter between the two scrapes, per endpoint and summed over them. A
  counter that went down (the engine restarted) counts from zero.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from kvroute.protocol.metric_names import ENGINES

__all__ = ["CACHE_COUNTERS", "cache_counters", "metrics_endpoint", "metrics_hit_rate",
           "scrape_metrics"]

# engine -> (cached-token counter, prompt-token counter), without the _total suffix
CACHE_COUNTERS: dict[str, tuple[str, str]] = {e.engine: (e.cache_hits, e.cache_queries)
                                              for e in ENGINES}
_WANTED = frozenset(n for pair in CACHE_COUNTERS.values() for n in pair)
_NAMED = " or ".join(f"{cached}_total" for cached, _ in CACHE_COUNTERS.values())


def cache_counters(text: str) -> dict[str, float]:
    """The prefix-cache counters in Prometheus ``text``, summed over label sets."""
    from kvroute.server.engine_metrics import samples

    return {name: sum(values) for name, values in samples(text, _WANTED).items()}


def metrics_endpoint(url: str) -> str:
    """``url`` itself when it names a path, else ``url/metrics``."""
    return url if urlsplit(url).path not in ("", "/") else url.rstrip("/") + "/metrics"


async def scrape_metrics(urls: Iterable[str], timeout: float = 10.0
                         ) -> dict[str, dict[str, float] | str]:
    """The prefix-cache counters of each ``/metrics`` URL, or why it could not be read."""

    async def one(http: aiohttp.ClientSession, url: str) -> dict[str, float] | str:
        try:
            async with http.get(metrics_endpoint(url)) as resp:
                if resp.status != 200:
                    return f"HTTP {resp.status}"
                return cache_counters(await resp.text())
        except (TimeoutError, aiohttp.ClientError) as e:
            return f"{type(e).__name__}: {e}"
        except ValueError as e:  # the Prometheus parser
            return f"unparsable metrics: {e}"

    urls = list(urls)
    if not urls:
        return {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http:
        got = await asyncio.gather(*(one(http, u) for u in urls))
    return dict(zip(urls, got, strict=True))


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
            per_url.append({"url": url, "error": f"no prefix-cache counters ({_NAMED})"})
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
