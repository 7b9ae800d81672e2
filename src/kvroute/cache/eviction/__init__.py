"""Eviction policies for the prefix cache, one module each, behind one registry that finds
every module here on first use (adding a module that registers a policy is enough).

=================  ==========================================================
``lru``            SGLang's leaf-LRU (paper.md section 4)
``block_lru``      vLLM's GPU prefix cache: LRU by pages, the oldest leaf's tail first
``rlt``            randomized leaf-token marking, the ideal algorithm (section 5)
``rlt_faithful``   the authors' RLT variant, for reproducing the paper
``rlt_reference``  the official algorithm done the slow way (tests, benchmarks)
``optimal``        offline tree-Belady ceiling, built from the future requests
``lfu``            SGLang's LFU (fewest hits, then oldest; whole leaves)
``slru``           SGLang's segmented LRU (probationary, then protected)
``sae``            vLLM CPU tier's session-aware score, ghost popularity, admission gate
``learned``        reuse learned from ghosts, with an RLT fallback per phase
=================  ==========================================================
"""

from kvroute.cache.eviction.policy import EvictionPolicy
from kvroute.cache.eviction.registry import make_policy, policy_class, policy_names, register

__all__ = ["EvictionPolicy", "make_policy", "policy_class", "policy_names", "register"]
