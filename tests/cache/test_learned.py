"""``learned`` eviction: its worst-case guarantee on the adversarial cycle, the fallback
that provides it, learning from ghosts, and determinism."""

import pytest

from kvroute.cache import RadixCache, make_policy, replay
from kvroute.errors import ConfigError
from kvroute.workloads.adversarial import AdversarialConfig, adversarial_cycle
from kvroute.workloads.gsp import GSPConfig, generate_gsp


def run(name, prompts, capacity, seed=1, page_size=1, **args):
    policy = make_policy(name, args, seed=seed)
    cache = RadixCache(capacity, policy, page_size=page_size)
    result = replay(cache, prompts)
    cache.check_integrity()
    return result.hit_rate, policy


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_guarantee_on_the_adversarial_cycle(seed):
    """k + 1 paths cycled through a cache of k: leaf-LRU never hits, learned keeps at
    least 0.9x RLT's hit rate (the docstring's guarantee, measured)."""
    cfg = AdversarialConfig(paths=9, length=64, rounds=30, seed=seed)
    prompts = adversarial_cycle(cfg)
    lru, _ = run("lru", prompts, cfg.capacity, seed)
    rlt, _ = run("rlt", prompts, cfg.capacity, seed)
    learned, policy = run("learned", prompts, cfg.capacity, seed)
    assert lru == 0.0 and rlt > 0.5
    assert learned >= 0.9 * rlt
    # predictions fail here: after a failed phase it backs off (1, 3, 7... RLT phases)
    assert policy.rlt_phases > policy.phases // 2


def test_the_fallback_is_what_keeps_the_guarantee():
    """With unlimited trust (never fall back) the predictions alone behave like LRU on
    the cycle and never hit: the test above would fail without the fallback."""
    cfg = AdversarialConfig(paths=9, length=64, rounds=30, seed=1)
    prompts = adversarial_cycle(cfg)
    blind, policy = run("learned", prompts, cfg.capacity, trust=1e9)
    assert blind < 0.1 and policy.rlt_phases == 0
    guarded, _ = run("learned", prompts, cfg.capacity)
    assert guarded > blind + 0.4


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_learns_that_unique_suffixes_are_not_reused(seed):
    """GSP (shared group prefixes, unique questions): ghosts show that never-hit spans
    below a cached prefix do not come back, so learned keeps the prefixes and beats
    both lru and rlt clearly."""
    prompts = generate_gsp(GSPConfig(groups=12, prompts_per_group=8, lengths=(256, 512),
                                     seed=seed)).prompts
    lru, _ = run("lru", prompts, 3000, seed)
    rlt, _ = run("rlt", prompts, 3000, seed)
    learned, policy = run("learned", prompts, 3000, seed)
    assert learned >= 1.1 * max(lru, rlt)
    assert policy.ghosts.tokens <= 3000


def test_seeded_and_pages():
    cfg = AdversarialConfig(paths=5, length=32, rounds=10, seed=4)
    prompts = adversarial_cycle(cfg)
    a, _ = run("learned", prompts, cfg.capacity, seed=7, page_size=4)
    b, _ = run("learned", prompts, cfg.capacity, seed=7, page_size=4)
    assert a == b


def test_ghost_hit_restores_popularity_and_credits_the_class():
    """A span evicted and asked for again is credited (shared length) and its leaf comes
    back with the hits it had."""
    policy = make_policy("learned", seed=0)
    cache = RadixCache(8, policy)
    cache.match([1, 2, 3, 4], now=0)
    cache.insert([1, 2, 3, 4], now=0)
    for t in (1, 2):
        cache.match([1, 2, 3, 4], now=t)  # two hits
    cache.evict(4)
    assert cache.total == 0 and len(policy.ghosts) == 1
    cache.insert([1, 2, 3, 9], now=3)  # shares 3 ids with the ghost
    assert sum(policy.model.reused) == 3 and sum(policy.model.evicted) == 4
    leaf = next(iter(cache.root.children.values()))
    assert leaf.aux[0] == 2


def test_bad_parameters():
    with pytest.raises(ConfigError, match="trust"):
        make_policy("learned", {"trust": "-1"})
    with pytest.raises(ConfigError, match="ghosts"):
        make_policy("learned", {"ghosts": "0"})
