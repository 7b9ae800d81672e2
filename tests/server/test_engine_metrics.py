"""Reading engine load and cache counters from Prometheus pages (kvroute.server.engine_metrics)."""

from __future__ import annotations

import pytest

from kvroute.server.engine_metrics import EngineLoad, engine_load, samples

VLLM_V1 = """# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 3.0
vllm:num_requests_running{engine="1",model_name="m"} 4.0
vllm:num_requests_waiting{engine="0",model_name="m"} 1.0
vllm:num_requests_waiting{engine="1",model_name="m"} 0.0
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.5
vllm:kv_cache_usage_perc{engine="1",model_name="m"} 0.25
vllm:cache_config_info{block_size="16",engine="0",num_gpu_blocks="1000"} 1.0
vllm:cache_config_info{block_size="16",engine="1",num_gpu_blocks="1000"} 1.0
# TYPE vllm:e2e_request_latency_seconds histogram
vllm:e2e_request_latency_seconds_bucket{le="0.3",model_name="m"} 7.0
vllm:prefix_cache_hits_total{engine="0",model_name="m"} 120.0
vllm:prefix_cache_hits_total{engine="1",model_name="m"} 30.0
vllm:prefix_cache_hits_created{engine="0",model_name="m"} 1.7e9
"""

VLLM_V0 = """vllm:num_requests_running{model_name="m"} 2.0
vllm:num_requests_waiting{model_name="m"} 6.0
vllm:gpu_cache_usage_perc{model_name="m"} 0.9
"""


def test_vllm_v1_sums_counts_and_averages_usage_over_engines() -> None:
    assert engine_load(VLLM_V1) == EngineLoad(running=7, waiting=1, kv_usage=0.375,
                                              kv_capacity=32_000)


def test_vllm_v0_usage_name_and_unknown_capacity() -> None:
    assert engine_load(VLLM_V0) == EngineLoad(running=2, waiting=6, kv_usage=0.9, kv_capacity=0)


def test_vllm_lora_cap_from_its_info_gauge() -> None:
    """vLLM with LoRA: ``vllm:lora_requests_info``'s value is a time, its ``max_lora``
    label the cap on adapters running at once."""
    page = VLLM_V0 + ('vllm:lora_requests_info{max_lora="4",running_lora_adapters="a,b",'
                      'waiting_lora_adapters=""} 1.7e9\n')
    assert engine_load(page) == EngineLoad(running=2, waiting=6, kv_usage=0.9,
                                           kv_capacity=0, max_loras=4)
    bad = VLLM_V0 + 'vllm:lora_requests_info{max_lora="x"} 1.7e9\n'
    assert engine_load(bad).max_loras == 0  # type: ignore[union-attr]


def test_sglang_names_win_over_vllm_names_on_a_page_with_both() -> None:
    page = VLLM_V0 + 'sglang:num_running_reqs{model_name="m"} 1\nsglang:num_queue_reqs 0\n'
    assert engine_load(page) == EngineLoad(running=1, waiting=0, kv_usage=0.0, kv_capacity=0)


def test_sglang_reports_its_cap_on_running_requests() -> None:
    page = ('sglang:num_running_reqs{model_name="m"} 5\nsglang:num_queue_reqs 2\n'
            'sglang:max_total_num_tokens{model_name="m"} 9000\n'
            'sglang:max_running_requests{model_name="m"} 48\n')
    assert engine_load(page) == EngineLoad(running=5, waiting=2, kv_usage=0.0,
                                           kv_capacity=9000, max_running=48)


def test_page_without_load_gauges_is_none_and_bad_values_raise() -> None:
    assert engine_load("# nothing\nprocess_cpu_seconds_total 3.0\n") is None
    with pytest.raises(ValueError):
        engine_load('vllm:num_requests_running{model_name="m"} many\n')


@pytest.mark.parametrize("line", ['vllm:kv_cache_usage_perc{model_name="m"} NaN',
                                  'vllm:num_requests_running{model_name="m"} +Inf',
                                  'vllm:num_requests_waiting{model_name="m"} -1'])
def test_a_load_gauge_that_reads_nan_inf_or_below_zero_raises(line: str) -> None:
    # the scrape reports a ValueError as an unreadable page (the policies keep the last
    # load); NaN reached the policies before, and +Inf escaped as an OverflowError
    with pytest.raises(ValueError, match="reads"):
        engine_load(VLLM_V0 + line + "\n")


def test_samples_strip_total_skip_created_and_other_families() -> None:
    got = samples(VLLM_V1, ["vllm:prefix_cache_hits"])
    assert got == {"vllm:prefix_cache_hits": [120.0, 30.0]}
