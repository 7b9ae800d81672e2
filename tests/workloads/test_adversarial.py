"""The adversarial cycle: disjoint paths, the fixed order, and its point (LRU never hits)."""

import numpy as np
import pytest

from kvroute.cache import RadixCache, make_policy, replay
from kvroute.errors import ConfigError
from kvroute.workloads.adversarial import AdversarialConfig, adversarial_cycle


def test_shape_and_disjoint_paths():
    cfg = AdversarialConfig(paths=4, length=8, rounds=3, seed=2)
    prompts = adversarial_cycle(cfg)
    assert len(prompts) == 12 and all(len(p) == 8 for p in prompts)
    firsts = [p[0] for p in prompts[:4]]
    assert len(set(firsts)) == 4  # disjoint branches under the root
    assert all(np.array_equal(prompts[i], prompts[i + 4]) for i in range(8))
    assert cfg.capacity == 24
    other = adversarial_cycle(AdversarialConfig(paths=4, length=8, rounds=1, seed=3))
    assert not set(np.concatenate(other).tolist()) & set(np.concatenate(prompts).tolist())


def test_lru_never_hits_while_rlt_and_optimal_do():
    cfg = AdversarialConfig(paths=5, length=16, rounds=10)
    prompts = adversarial_cycle(cfg)
    lru = replay(RadixCache(cfg.capacity, make_policy("lru")), prompts).hit_rate
    rlt = replay(RadixCache(cfg.capacity, make_policy("rlt", seed=1)), prompts).hit_rate
    opt = replay(RadixCache(cfg.capacity, make_policy("optimal", requests=prompts)),
                 prompts).hit_rate
    assert lru == 0.0 and 0 < rlt < opt


def test_bad_config():
    with pytest.raises(ConfigError, match="paths"):
        AdversarialConfig(paths=1)
