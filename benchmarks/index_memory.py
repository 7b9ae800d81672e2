"""Memory of the router's prefix index: bytes per indexed unit, and the bound by KV pool.

Records GSP-like prompts (groups sharing a prefix) routed round robin to W workers into a
``PrefixIndex`` and reports, with tracemalloc, the bytes the index holds per unit it
indexes (summed over workers) and per distinct unit in the tree; then the same stream
with every worker bounded to a KV pool (``set_capacity``), the live router's default.

    python benchmarks/index_memory.py [--workers 4] [--prompts 2000] [--pool 200000]
"""

from __future__ import annotations

import argparse
import tracemalloc

import numpy as np

from kvroute.routing.prefix_index import PrefixIndex


def stream(n: int, rng: np.random.Generator, groups: int = 64) -> list[np.ndarray]:
    shared = [rng.integers(0, 128_256, int(rng.integers(256, 4096))) for _ in range(groups)]
    return [np.concatenate([shared[k % groups], rng.integers(0, 128_256, 512)])
            for k in range(n)]


def measure(prompts: list[np.ndarray], workers: int, pool: int | None) -> tuple[int, int, int]:
    """(bytes held, units indexed over workers, distinct units in the tree)."""
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    index = PrefixIndex(workers, trim_interval=1.0)
    if pool is not None:
        for w in range(workers):
            index.set_capacity(w, pool)
    for k, p in enumerate(prompts):
        index.record(k % workers, p, float(k))
    index.trim()
    held = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    distinct, stack = 0, [index.root]
    while stack:
        node = stack.pop()
        distinct += len(node.key)
        stack.extend(node.children.values())
    return held, int(index.sizes().sum()), distinct


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--prompts", type=int, default=2000)
    ap.add_argument("--pool", type=int, default=200_000, help="KV pool per worker, units")
    args = ap.parse_args()
    prompts = stream(args.prompts, np.random.default_rng(0))
    sent = sum(len(p) for p in prompts)
    print(f"{args.prompts:,} prompts, {sent:,} units sent to {args.workers} workers")
    for label, pool in (("unbounded (2^24 a worker)", None), (f"bounded ({args.pool:,})",
                                                               args.pool)):
        held, indexed, distinct = measure(prompts, args.workers, pool)
        print(f"{label:<28} {held / 2**20:8.1f} MiB  {indexed:>12,} units indexed  "
              f"{held / max(indexed, 1):6.1f} B/indexed unit  "
              f"{held / max(distinct, 1):6.1f} B/distinct unit")


if __name__ == "__main__":
    main()
