"""What ``kvroute bench`` is asked to do: :class:`BenchConfig` (validated on creation;
a bad value is a :class:`~kvroute.errors.ConfigError`)."""

from __future__ import annotations

from dataclasses import dataclass

from kvroute.errors import ConfigError
from kvroute.protocol.request_body import APIS
from kvroute.workloads.request import check_max_tokens

__all__ = ["BenchConfig"]


@dataclass(frozen=True)
class BenchConfig:
    url: str
    api: str | None = None  # None: per request (completions, or chat for chat-shaped ones)
    model: str | None = None  # None: the first of GET /v1/models, else "default"
    concurrency: int | None = None  # closed loop clients / open-loop pulling workers
    requests: int | None = None  # only the first N requests
    duration: float | None = None  # stop sending after this many seconds
    timeout: float = 300.0  # per request, seconds
    metrics_urls: tuple[str, ...] = ()
    # what each request sends as max_tokens: "exact" (its output, with ignore_eos), "none"
    # or "N" (a cap): with the last two, its output goes as min_tokens instead, without
    # ignore_eos (the module doc of kvroute.bench.client)
    max_tokens: str = "exact"
    # each request names one of this many LoRA adapters (``lora0`` ...: the model, SGLang's
    # lora_path), drawn as the simulator draws them with seed 1 (workloads.adapters); 0: none
    adapters: int = 0

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ConfigError(f"--url must start with http:// or https://, got {self.url!r}")
        if self.api is not None and self.api not in APIS:
            raise ConfigError(f"unknown api {self.api!r}; choose from: {', '.join(APIS)}")
        for name in ("concurrency", "requests"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be >= 1, got {value}")
        if self.duration is not None and not self.duration > 0:
            raise ConfigError(f"duration must be > 0 s, got {self.duration}")
        if not self.timeout > 0:
            raise ConfigError(f"timeout must be > 0 s, got {self.timeout}")
        check_max_tokens(self.max_tokens)
        if self.adapters < 0:
            raise ConfigError(f"adapters must be >= 0, got {self.adapters}")
        for u in self.metrics_urls:
            if not u.startswith(("http://", "https://")):
                raise ConfigError(f"--metrics-url must start with http:// or https://, got {u!r}")

    @property
    def base_url(self) -> str:
        return self.url.rstrip("/")
