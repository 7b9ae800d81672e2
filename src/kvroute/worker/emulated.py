"""The emulated worker's engine: a :class:`SimWorker` that runs in real time (on asyncio's
clock through :class:`RealtimeLoop`), behind the HTTP API of
:mod:`kvroute.worker.http_api`.

Contract:

* Each prompt (read by :mod:`kvroute.protocol.request_body`: text through the configured
  tokenizer, chat messages through the chat template of the ``tokenizer_config.json``
  beside it, else the Llama-3-like one, token ids as they are) becomes a
  :class:`Request` with ``output_len`` = ``max_tokens``, submitted as a :class:`Job` to
  the one SimWorker (:meth:`EmulatedWorker.submit`: a batch is checked whole before any
  of it is queued). Its answer comes when the SimWorker says so (``on_first_token``,
  ``on_token``, ``on_finish``, which move :attr:`Pending.progress` and
  :attr:`Pending.done`): latency, batching, queueing and prefix-cache hits are the
  simulator's; the generated text is deterministic filler (:func:`filler_text`,
  ``max_tokens`` pieces, no EOS).
* A prompt that can never fit (its tokens plus ``max_tokens`` over the KV pool) or has
  no tokens is a :class:`~kvroute.protocol.request_body.BadRequest`. A request whose
  client went away runs to completion.
* ``speed`` divides every step time (all step-model coefficients), so tests and demos can
  run faster than real time; the KV pool size is unchanged.
* With ``kv_events_endpoint`` the radix cache's changes are published as vLLM KV events
  (:mod:`kvroute.worker.kv_publisher`: blocks of ``block_size`` tokens, a replay socket
  on ``kv_events_replay_endpoint``); :attr:`EmulatedWorker.events` has the bound
  addresses once started. The engine itself behaves the same with events on or off.
* Data parallelism (``dp_size`` ranks, vLLM's ``--data-parallel-size``): an
  :class:`EmulatedWorker` is one rank (``rank``, default 0), an engine of its own (its
  SimWorker, radix cache and KV pool of ``capacity``, the same profile, policy and seed);
  :class:`kvroute.worker.data_parallel.DataParallelWorker` runs them all behind one
  app. With ``dp_size > 1`` rank ``r``'s metrics carry its rank as a label and its KV
  events go out on the endpoints offset by ``r``
  (:func:`~kvroute.worker.kv_publisher.rank_endpoint`), each batch carrying
  ``data_parallel_rank = r``. With ``dp_size = 1`` rank 0 is the engine described above.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kvroute.errors import ConfigError
from kvroute.protocol.request_body import BadRequest, PromptEncoder
from kvroute.sim.events import RealtimeLoop
from kvroute.sim.step_model import StepModel, check_speed
from kvroute.sim.step_profiles import DEFAULT_PROFILE, load_profile
from kvroute.sim.worker import Job, SimWorker, WorkerConfig
from kvroute.worker.exported_metrics import ExportedMetrics
from kvroute.worker.kv_publisher import CachePublisher, check_rank_endpoints, rank_endpoint
from kvroute.workloads.chat_template import find_chat_template
from kvroute.workloads.request import Request
from kvroute.workloads.tokenizer import Tokenizer, load_tokenizer

__all__ = ["EmulatedConfig", "EmulatedWorker", "Pending", "filler_piece", "filler_text",
           "flush_refused"]

_FILLER = ("lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit",
           "sed", "do", "eiusmod", "tempor", "incididunt", "ut", "labore", "et", "dolore",
           "magna", "aliqua")


def filler_piece(i: int) -> str:
    """The text of generated token ``i`` (0-based): deterministic filler."""
    return " " + _FILLER[i % len(_FILLER)]


def filler_text(start: int, end: int) -> str:
    """The text of generated tokens ``start`` .. ``end - 1``."""
    return "".join(filler_piece(i) for i in range(start, end))


@dataclass(frozen=True)
class EmulatedConfig:
    """What the emulated worker serves (see the module docstring)."""

    profile: str | StepModel = DEFAULT_PROFILE  # a profile name / JSON path, or a model
    eviction: str = "lru"
    eviction_args: Mapping[str, Any] = field(default_factory=dict)  # the policy's parameters
    capacity: int | None = None  # KV pool in tokens; None: the profile's
    tokenizer: str | None = None  # tokenizer.json; None: the builtin approximation
    seed: int = 1
    speed: float = 1.0  # step times are divided by this
    model_name: str = "kvroute-emulated"  # reported by /v1/models and in responses
    chunk_size: int = 8192
    max_running: int | None = None
    default_max_tokens: int = 16
    # KV events (vLLM's wire form): ZMQ endpoints to bind (":*": a free port); None: off
    kv_events_endpoint: str | None = None
    kv_events_replay_endpoint: str | None = None
    block_size: int = 16  # tokens per published block
    dp_size: int = 1  # data-parallel ranks (engines) behind the one HTTP port
    # LoRA adapters served by name (``model``, SGLang's ``lora_path``), and how many distinct
    # ones run at once (None: no cap); the KV cache is not split by adapter
    lora_modules: tuple[str, ...] = ()
    max_loras: int | None = None

    def __post_init__(self) -> None:
        check_speed(self.speed)
        if isinstance(self.dp_size, bool) or not isinstance(self.dp_size, int) \
                or self.dp_size < 1:
            raise ConfigError(f"dp_size (data-parallel ranks) must be an integer >= 1, got "
                              f"{self.dp_size!r}")
        if not self.model_name:
            raise ConfigError("model_name must be a non-empty string")
        if "" in self.lora_modules or self.model_name in self.lora_modules:
            raise ConfigError("a LoRA adapter's name must be non-empty and not the model's")
        if self.default_max_tokens < 1:
            raise ConfigError(f"default_max_tokens must be >= 1, got {self.default_max_tokens}")
        if self.block_size < 1:
            raise ConfigError(f"block_size must be >= 1 token, got {self.block_size}")
        if self.kv_events_replay_endpoint and not self.kv_events_endpoint:
            raise ConfigError("a KV-events replay endpoint needs a KV-events endpoint")
        if self.kv_events_endpoint and self.dp_size > 1:
            check_rank_endpoints(self.kv_events_endpoint, self.kv_events_replay_endpoint,
                                 self.dp_size)
        self.worker_config()  # validates capacity, chunk_size, max_running, the policy

    def step_model(self) -> StepModel:
        """The profile's step model, sped up by ``speed``."""
        model = self.profile if isinstance(self.profile, StepModel) else \
            load_profile(self.profile)
        return model.at_speed(float(self.speed))

    def worker_config(self) -> WorkerConfig:
        return WorkerConfig(capacity=self.capacity, eviction=self.eviction,
                            eviction_args=self.eviction_args, chunk_size=self.chunk_size,
                            max_running=self.max_running, max_loras=self.max_loras)


class Pending:
    """One request in flight: its job and what the HTTP side waits on."""

    __slots__ = ("counted", "done", "job", "progress", "t0")

    def __init__(self, job: Job, loop: asyncio.AbstractEventLoop) -> None:
        self.job = job
        self.t0 = loop.time()
        self.done: asyncio.Future[float] = loop.create_future()  # result: finish time
        self.progress = asyncio.Event()
        self.counted = 0  # generated tokens already added to the metrics


class EmulatedWorker:
    """The state behind one engine (one data-parallel rank): the SimWorker (built by
    :meth:`start`), requests in flight, metrics. ``share``: another rank of the same
    config whose tokenizer, prompt encoder and request ids this one uses too."""

    def __init__(self, config: EmulatedConfig, rank: int = 0, *,
                 share: EmulatedWorker | None = None) -> None:
        if not 0 <= rank < config.dp_size:
            raise ConfigError(f"rank must be in [0, {config.dp_size}) (the data-parallel "
                              f"ranks), got {rank}")
        self.config = config
        self.rank = rank
        self.model = config.step_model()
        self.worker_config = config.worker_config()
        self.capacity = self.worker_config.capacity or self.model.kv_pool_tokens
        if share is None:
            self.tokenizer: Tokenizer = load_tokenizer(config.tokenizer)
            template = find_chat_template(config.tokenizer) if config.tokenizer else None
            self.prompts = PromptEncoder(self.tokenizer, template)
            self._rids: itertools.count[int] = itertools.count()
        else:
            self.tokenizer, self.prompts, self._rids = share.tokenizer, share.prompts, \
                share._rids
        self.metrics = ExportedMetrics(config.model_name, self.capacity,
                                       running=lambda: self.running,
                                       waiting=lambda: self.waiting, kv_usage=self.kv_usage,
                                       max_running=self.worker_config.max_running,
                                       max_loras=config.max_loras,
                                       dp_rank=rank if config.dp_size > 1 else None)
        self.worker: SimWorker | None = None
        self.events: CachePublisher | None = None
        self.pending: dict[int, Pending] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Build the SimWorker on the running event loop."""
        self._loop = asyncio.get_running_loop()
        self.worker = SimWorker(self.rank, self.model, self.worker_config,
                                RealtimeLoop(self._loop), on_finish=self._on_finish,
                                seed=self.config.seed, on_first_token=self._on_first_token,
                                on_token=self._on_token)
        c, r = self.config, self.rank
        if c.kv_events_endpoint:
            replay = c.kv_events_replay_endpoint
            self.events = CachePublisher(self.worker.cache, self._loop,
                                         rank_endpoint(c.kv_events_endpoint, r),
                                         None if replay is None else rank_endpoint(replay, r),
                                         c.block_size, dp_rank=r)

    def close(self) -> None:
        """Close the KV-event sockets, if any."""
        if self.events is not None:
            self.events.close()
            self.events = None

    @property
    def started(self) -> bool:
        return self.worker is not None

    def now(self) -> float:
        """The event loop's clock (seconds)."""
        assert self._loop is not None, "not started"
        return self._loop.time()

    # ---------------------------------------------------------------- state
    @property
    def running(self) -> int:
        return self.worker.running if self.worker is not None else 0

    @property
    def waiting(self) -> int:
        return len(self.worker.waiting) if self.worker is not None else 0

    @property
    def load(self) -> int:
        """Requests running or queued."""
        return self.running + self.waiting

    def kv_usage(self) -> float:
        """The pool's share that eviction cannot free (locked cache and reservations), as
        SGLang's ``token_usage`` counts it and the simulator's router sees it."""
        w = self.worker
        return w.held_tokens / w.capacity if w is not None else 0.0

    # ---------------------------------------------------------------- SimWorker callbacks
    def _on_first_token(self, job: Job) -> None:
        self.metrics.prefilled(job.req.prompt_len, job.cached)

    def _on_token(self, job: Job) -> None:
        p = self.pending.get(job.req.rid)
        if p is None:
            return
        new = job.generated - p.counted
        if new > 0:
            p.counted = job.generated
            self.metrics.generated(new)
        p.progress.set()

    def _on_finish(self, job: Job) -> None:
        self.metrics.finished()
        p = self.pending.pop(job.req.rid, None)
        if p is None:
            return
        p.progress.set()
        if not p.done.done():
            p.done.set_result(self.now())

    # ---------------------------------------------------------------- requests
    def submit(self, prompts: list[np.ndarray], max_tokens: int,
               adapter: str | None = None) -> list[Pending]:
        """Queue each prompt (for LoRA ``adapter``, None: the base model) on the SimWorker;
        a BadRequest, with none queued, when one can never be served."""
        if self.worker is None or self._loop is None:
            raise RuntimeError("the worker is not started")
        for ids in prompts:
            if len(ids) == 0:
                raise BadRequest("the prompt is empty (no tokens)")
            if len(ids) + max_tokens > self.capacity:
                raise BadRequest(f"the prompt ({len(ids)} tokens) plus max_tokens "
                                 f"({max_tokens}) exceeds the KV pool of {self.capacity} "
                                 f"tokens")
        out = []
        for ids in prompts:
            rid = next(self._rids)
            try:
                req = Request(rid=rid, tokens=np.asarray(ids, dtype=np.int64),
                              output_len=max_tokens, adapter=adapter)
            except ConfigError as e:
                raise BadRequest(str(e)) from e
            job = Job(req, self.rank, self.worker.loop.now)
            pending = Pending(job, self._loop)
            self.pending[rid] = pending
            try:
                self.worker.submit(job)
            except ConfigError as e:
                del self.pending[rid]
                raise BadRequest(str(e)) from e
            out.append(pending)
        return out

    def busy(self) -> bool:
        """Whether requests are in flight (queued, running, or holding cache)."""
        w = self.worker
        return w is not None and bool(w.running or w.waiting or w.cache.locked)

    def flush(self) -> str | None:
        """Clear the radix cache; the reason it cannot (requests in flight), else None."""
        w = self.worker
        if w is None:
            return "the worker is starting"
        if self.busy():
            return flush_refused(len(w.waiting), w.running)
        w.cache.clear()
        return None


def flush_refused(waiting: int, running: int) -> str:
    """Why ``/flush_cache`` did nothing (SGLang's words)."""
    return (f"Cache not flushed because there are pending requests. "
            f"#queue-req: {waiting}, #running-req: {running}")
