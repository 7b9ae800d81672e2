"""``PredictionErrors``: running sums of predicted - observed latency (or any count: the
``unit`` that ends each key, ``s`` by default) since a policy started.

The report gives the sums as well as the means, so that a window can be read off two
reports: live, ``delta(...{key="e2e.abs_error_sum_s"}[5m]) /
delta(...{key="e2e.count"}[5m])`` on ``kvroute_policy_telemetry`` is the mean absolute
error of the last five minutes (the means keep the warm-up for a long time).
"""

from __future__ import annotations

__all__ = ["PredictionErrors"]


class PredictionErrors:
    def __init__(self, unit: str = "s") -> None:
        self.unit = unit
        self.n = 0
        self.abs = 0.0
        self.signed = 0.0
        self.observed = 0.0

    def add(self, predicted: float, observed: float) -> None:
        self.n += 1
        self.abs += abs(predicted - observed)
        self.signed += predicted - observed
        self.observed += observed

    def report(self) -> dict[str, float]:
        n, u = max(self.n, 1), self.unit
        return {"count": self.n, f"mean_abs_error_{u}": self.abs / n,
                f"mean_error_{u}": self.signed / n, f"mean_observed_{u}": self.observed / n,
                "relative_abs_error": self.abs / self.observed if self.observed else 0.0,
                f"abs_error_sum_{u}": self.abs, f"error_sum_{u}": self.signed,
                f"observed_sum_{u}": self.observed}
