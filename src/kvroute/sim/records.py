"""Per-request records and the summaries reported for a run (all times in seconds).

Definitions (the same for the simulator and the load generator):

* hit rate = cached prompt tokens / prompt tokens, over finished requests; cached tokens
  are the prefix matched when the request was admitted (SGLang's ``cached_tokens``);
* TTFT = first token - arrival; E2E = last token - arrival; queue = admission - arrival;
* throughput = finished requests (and prompt / output tokens) / duration, where duration
  runs from the first arrival to the last completion.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["COLUMNS", "Records", "latency_stats"]

COLUMNS = ("rid", "session", "worker", "arrival", "start", "first_token", "finish", "prompt",
           "cached", "output")


def latency_stats(values: np.ndarray) -> dict[str, float]:
    """Mean, p50, p90, p99 and max of ``values`` (NaN for an empty array)."""
    if len(values) == 0:
        return dict.fromkeys(("mean", "p50", "p90", "p99", "max"), float("nan"))
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {"mean": float(values.mean()), "p50": float(p50), "p90": float(p90),
            "p99": float(p99), "max": float(values.max())}


@dataclass(frozen=True)
class Records:
    """Columns of finished requests, one row per request, in completion order."""

    columns: dict[str, np.ndarray]

    @classmethod
    def from_rows(cls, rows: list[tuple[float, ...]]) -> Records:
        table = np.array(rows, dtype=np.float64).reshape(-1, len(COLUMNS))
        return cls({name: table[:, k] for k, name in enumerate(COLUMNS)})

    def __len__(self) -> int:
        return len(self.columns["rid"])

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    @property
    def ttft(self) -> np.ndarray:
        span: np.ndarray = self["first_token"] - self["arrival"]
        return span

    @property
    def e2e(self) -> np.ndarray:
        span: np.ndarray = self["finish"] - self["arrival"]
        return span

    @property
    def queue(self) -> np.ndarray:
        span: np.ndarray = self["start"] - self["arrival"]
        return span

    @property
    def duration(self) -> float:
        return float(self["finish"].max() - self["arrival"].min()) if len(self) else 0.0

    def hit_rate(self, worker: int | None = None) -> float:
        rows = slice(None) if worker is None else self["worker"] == worker
        prompt = self["prompt"][rows].sum()
        return float(self["cached"][rows].sum() / prompt) if prompt else 0.0

    def summary(self, workers: int) -> dict[str, Any]:
        duration = self.duration
        rate = (lambda x: x / duration) if duration > 0 else (lambda x: float("nan"))
        per_worker = []
        for w in range(workers):
            mine = self["worker"] == w
            per_worker.append({"worker": w, "requests": int(mine.sum()),
                               "hit_rate": self.hit_rate(w),
                               "prompt_tokens": int(self["prompt"][mine].sum())})
        return {
            "requests": len(self),
            "hit_rate": self.hit_rate(),
            "prompt_tokens": int(self["prompt"].sum()),
            "cached_tokens": int(self["cached"].sum()),
            "output_tokens": int(self["output"].sum()),
            "duration_s": duration,
            "throughput_rps": rate(len(self)),
            "prompt_tps": rate(float(self["prompt"].sum())),
            "output_tps": rate(float(self["output"].sum())),
            "ttft_s": latency_stats(self.ttft),
            "e2e_s": latency_stats(self.e2e),
            "queue_s": latency_stats(self.queue),
            "per_worker": per_worker,
        }
