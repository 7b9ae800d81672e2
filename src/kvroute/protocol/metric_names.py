"""SGLang's and vLLM's Prometheus metric names, as their ``/metrics`` pages spell them: the
emulated worker exports both (:mod:`kvroute.worker.exported_metrics`), the router reads
the load gauges (:mod:`kvroute.server.engine_metrics`) and the load generator the
prefix-cache counters (:mod:`kvroute.bench.scrape`).

Counters are named without their ``_total`` suffix (the exposition adds it; readers
strip it). Every family carries a ``model_name`` label, except vLLM's
``cache_config_info``, whose value is 1 and whose ``num_gpu_blocks`` and ``block_size``
labels give the KV pool. With data parallelism each rank's series also carry its rank,
under the engine's ``rank_label``.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ENGINES", "SGLANG", "VLLM", "EngineMetricNames"]


@dataclass(frozen=True)
class EngineMetricNames:
    """One engine's names (gauges and counters of the KV cache pool are in tokens)."""

    engine: str
    running: str  # gauge: requests running
    waiting: str  # gauge: requests queued
    kv_usage: tuple[str, ...]  # gauges: fraction of the KV pool in use, preferred first
    kv_capacity: str  # SGLang: a gauge in tokens; vLLM: the info metric (see above)
    prompt_tokens: str  # counter: prompt tokens processed
    generation_tokens: str  # counter: tokens generated
    requests_finished: str  # counter
    cache_hits: str  # counter: prompt tokens served from the prefix cache
    cache_queries: str  # counter: prompt tokens looked up (the hit rate's denominator)
    max_running: str = ""  # gauge: the cap on running requests ("": none reported, as vLLM)
    # info gauge whose ``max_lora`` label is the cap on LoRA adapters running at once
    lora_info: str = ""
    rank_label: str = ""  # the label naming a data-parallel rank's series


SGLANG = EngineMetricNames(
    engine="sglang", running="sglang:num_running_reqs", waiting="sglang:num_queue_reqs",
    kv_usage=("sglang:token_usage",), kv_capacity="sglang:max_total_num_tokens",
    prompt_tokens="sglang:prompt_tokens", generation_tokens="sglang:generation_tokens",
    requests_finished="sglang:num_requests", cache_hits="sglang:cached_tokens",
    cache_queries="sglang:prompt_tokens", max_running="sglang:max_running_requests",
    rank_label="dp_rank")

VLLM = EngineMetricNames(
    engine="vllm", running="vllm:num_requests_running", waiting="vllm:num_requests_waiting",
    kv_usage=("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),  # V1, V0
    kv_capacity="vllm:cache_config_info",
    prompt_tokens="vllm:prompt_tokens", generation_tokens="vllm:generation_tokens",
    requests_finished="vllm:request_success", cache_hits="vllm:prefix_cache_hits",
    cache_queries="vllm:prefix_cache_queries", lora_info="vllm:lora_requests_info",
    rank_label="engine")

ENGINES = (SGLANG, VLLM)  # the order readers try them in
