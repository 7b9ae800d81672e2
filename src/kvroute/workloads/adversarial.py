"""An adversarial prompt stream for eviction: where leaf-LRU is provably bad.

The stream cycles ``paths`` = k + 1 disjoint prompt paths of ``length`` ids each, in the
same order, ``rounds`` times. Its natural cache holds k of them (``capacity`` =
k * length). Leaf-LRU (and any policy that keeps the most recently used paths) then
evicts exactly the path asked for next, so after the first round it never hits: the
classic worst case of a deterministic policy (O(k)-competitive), while the offline
optimum misses about one path in k per round and RLT's randomised marking keeps a
share of every path (O(log k)). Robustness is measured on it, not argued.

Ids: path i, position j -> ``base + i * length + j`` (disjoint paths, no shared first
id, so every path is its own branch under the root). ``seed`` only shifts ``base``
(streams with different seeds share no ids); the order is fixed on purpose: a fixed
cycle is the adversary.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kvroute.errors import ConfigError

__all__ = ["AdversarialConfig", "adversarial_cycle"]


@dataclass(frozen=True)
class AdversarialConfig:
    paths: int = 17  # k + 1
    length: int = 512  # ids per path
    rounds: int = 40
    seed: int = 1

    def __post_init__(self) -> None:
        if self.paths < 2 or self.length < 1 or self.rounds < 1:
            raise ConfigError("adversarial stream needs paths >= 2, length >= 1, rounds >= 1; "
                              f"got paths={self.paths}, length={self.length}, "
                              f"rounds={self.rounds}")

    @property
    def capacity(self) -> int:
        """The cache it is built for: k = paths - 1 whole paths."""
        return (self.paths - 1) * self.length


def adversarial_cycle(config: AdversarialConfig | None = None) -> list[np.ndarray]:
    """The prompts, in serving order: path 0, 1, ..., k, 0, 1, ... (``rounds`` cycles)."""
    cfg = config or AdversarialConfig()
    base = 1 + cfg.seed * cfg.paths * cfg.length
    paths = [base + i * cfg.length + np.arange(cfg.length, dtype=np.int64)
             for i in range(cfg.paths)]
    return [paths[i] for _ in range(cfg.rounds) for i in range(cfg.paths)]
