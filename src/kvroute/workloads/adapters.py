"""LoRA adapters for a workload's requests, for the simulator's multi-adapter runs.

``adapter_for(tokens, adapters, seed)`` names the adapter a request is for: ``lora0`` ..
``lora{n-1}``, adapter k chosen with Zipf popularity (weight ``1 / (k + 1)``), by a hash
of the prompt's first ``HEAD`` tokens and ``seed``. Requests whose first ``HEAD`` tokens
agree get the same adapter: a tenant's requests share its system prompt and its adapter,
a conversation keeps its adapter, a GSP group is one tenant. Deterministic: no generator
state, so the same request gets the same adapter in every run and every policy's.
"""

from __future__ import annotations

import zlib

import numpy as np

__all__ = ["HEAD", "adapter_for"]

HEAD = 64


def adapter_for(tokens: np.ndarray, adapters: int, seed: int) -> str:
    head = np.ascontiguousarray(tokens[:HEAD], dtype=np.int64).tobytes()
    u = (zlib.crc32(head, zlib.crc32(seed.to_bytes(8, "little", signed=True)))
         / 2.0 ** 32)
    weights = 1.0 / np.arange(1, adapters + 1)
    k = int(np.searchsorted(np.cumsum(weights) / weights.sum(), u, side="right"))
    return f"lora{min(k, adapters - 1)}"
