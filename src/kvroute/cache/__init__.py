"""The prefix KV cache: a radix tree with pluggable eviction, and hit-rate ceilings."""

from kvroute.cache.ceilings import (
    Ceilings,
    ReplayResult,
    hit_rate_ceilings,
    infinite_hit_rate,
    optimal_hit_rate,
    replay,
)
from kvroute.cache.eviction import EvictionPolicy, make_policy, policy_names
from kvroute.cache.radix import KVEvent, MatchResult, Node, RadixCache, as_tokens

__all__ = ["Ceilings", "EvictionPolicy", "KVEvent", "MatchResult", "Node", "RadixCache",
           "ReplayResult", "as_tokens", "hit_rate_ceilings", "infinite_hit_rate",
           "make_policy", "optimal_hit_rate", "policy_names", "replay"]
