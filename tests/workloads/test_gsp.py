"""GSP reproduces the paper's totals and ceilings."""

import numpy as np
import pytest

from kvroute.cache import hit_rate_ceilings, infinite_hit_rate
from kvroute.errors import ConfigError
from kvroute.workloads import GSPConfig, generate_gsp


def test_paper_defaults_give_4096_prompts_and_12_8m_tokens():
    """128 groups x 32 prompts, lengths 512..8192: 4,096 prompts, 12,812,288 tokens;
    with an infinite cache the shared system prompts give a ceiling of about 0.48."""
    s = generate_gsp()
    assert len(s.prompts) == 4096 and s.prompt_tokens == 12_812_288
    assert 0.47 < infinite_hit_rate(s.prompts) < 0.49


def test_orders_and_seeds():
    """grouped keeps groups together, round_robin interleaves them, seeds reproduce."""
    cfg = dict(groups=3, prompts_per_group=2, lengths=(8, 16))
    assert generate_gsp(GSPConfig(order="grouped", **cfg)).groups.tolist() == [0, 0, 1, 1, 2, 2]
    assert generate_gsp(GSPConfig(order="round_robin", **cfg)).groups.tolist() == [0, 1, 2] * 2
    a, b = generate_gsp(GSPConfig(**cfg)), generate_gsp(GSPConfig(**cfg))
    assert all(np.array_equal(x, y) for x, y in zip(a.prompts, b.prompts, strict=True))
    s = generate_gsp(GSPConfig(order="grouped", prefix_ratio=0.5, **cfg))
    assert np.array_equal(s.prompts[0][:4], s.prompts[1][:4])  # shared system prompt
    assert [len(p) for p in s.prompts] == [8, 8, 16, 16, 8, 8]


def test_pooled_ceiling_bounds():
    """optimal <= infinite, and pooling capacity over workers never lowers the ceiling."""
    s = generate_gsp(GSPConfig(groups=10, prompts_per_group=8, lengths=(256, 512)))
    one = hit_rate_ceilings(s.prompts, 2000)
    four = hit_rate_ceilings(s.prompts, 2000, workers=4)
    assert one.optimal <= four.optimal <= four.infinite == one.infinite
    assert one.optimal > 0


def test_bad_config_is_a_clear_error():
    with pytest.raises(ConfigError, match="order"):
        GSPConfig(order="sorted")
    with pytest.raises(ConfigError, match="prefix_ratio"):
        GSPConfig(prefix_ratio=2)
