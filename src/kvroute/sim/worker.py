"""A simulated LLM worker: an SGLang-style scheduler over a real radix cache.

What is modelled (service-time.md):

* An FCFS waiting queue. The head request is admitted only when the KV pool can hold its
  uncached prompt plus its whole output: ``uncached + output <= free + evictable``,
  where the pool of ``capacity`` tokens is shared by the radix cache and the private
  tokens of admitted requests. Admission evicts from the cache (through the eviction
  policy) to make room. The queue blocks behind a head that does not fit.
* ``cached_tokens`` is the prefix matched at admission, capped at ``prompt - 1`` (an
  engine always computes the last prompt token to get logits). The matched path stays
  locked; when its prefill completes the prompt is stored in the tree (still locked, so
  later requests can hit it while it decodes), and when it finishes prompt + output are
  stored and unlocked.
* Each step is either a prefill step (chunks of admitted prompts, at most ``chunk_size``
  new tokens, the partly prefilled request first; with ``mixed_chunk`` the running
  decodes ride along) or, when no prefill is pending, a decode step for every running
  request. The step time comes from the :class:`~kvroute.sim.step_model.StepModel`.
* The first output token is produced by the step that finishes the prompt (TTFT ends
  there); each decode step adds one token to every running request.
* LoRA adapters (``Request.adapter``): with ``max_loras``, the running requests use at
  most that many distinct adapters (vLLM's ``--max-loras``, SGLang's
  ``--max-loras-per-batch``). A waiting request whose adapter would exceed it is passed
  over until a slot frees, and the requests behind it are admitted as usual (both
  engines' schedulers skip it: SGLang's since 2025; its earlier versions stopped the
  queue there). Base-model requests take no adapter slot. Loading an adapter costs no
  time, and the cache is not split by adapter: a workload gives different adapters
  different prompts (``SimConfig.adapters``).

Memory: a job waiting in the queue keeps its prompt as :class:`kvroute.cache.runs.Runs`
when that is ``COMPACT_RATIO`` times smaller than the array (a Mooncake prompt: a few
runs), and gets the array back when it reaches the head of the queue
(:meth:`Job.park`, :meth:`Job.unpark`): an overloaded run's backlog costs bytes per
request, not 8 per token. The results are the same.

Not modelled: preemption and retraction (admission reserves the whole output, so none is
needed), CPU/GPU overlap, speculative decoding, and network time.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from kvroute.cache import EvictionPolicy, Node, RadixCache, make_policy
from kvroute.cache.ceilings import COMPACT_RATIO
from kvroute.cache.eviction.registry import EVICTION
from kvroute.cache.runs import Runs
from kvroute.errors import ConfigError
from kvroute.sim.events import STEP_END, WAKE, EventLoop, RealtimeLoop
from kvroute.sim.step_model import StepModel, prefill_pairs
from kvroute.workloads.request import Request, output_ids

__all__ = ["Job", "SimWorker", "WorkerConfig"]


@dataclass(frozen=True)
class WorkerConfig:
    capacity: int | None = None  # KV pool in tokens; None: the profile's kv_pool_tokens
    eviction: str = "lru"
    eviction_args: Mapping[str, Any] = field(default_factory=dict)  # the policy's parameters
    chunk_size: int = 8192
    max_running: int | None = None  # None: limited by the KV pool only
    max_loras: int | None = None  # distinct LoRA adapters running at once; None: no limit
    mixed_chunk: bool = False
    page_size: int = 1

    def __post_init__(self) -> None:
        if self.capacity is not None and self.capacity < 1:
            raise ConfigError(f"capacity must be >= 1 token, got {self.capacity}")
        if self.chunk_size < 1:
            raise ConfigError(f"chunk_size must be >= 1 token, got {self.chunk_size}")
        if self.max_running is not None and self.max_running < 1:
            raise ConfigError(f"max_running must be >= 1, got {self.max_running}")
        if self.max_loras is not None and self.max_loras < 1:
            raise ConfigError(f"max_loras must be >= 1, got {self.max_loras}")
        EVICTION.require(self.eviction, "on a worker, where requests arrive online",
                         needs_future=False)
        self.make_policy(seed=0)  # the policy validates its parameters

    def make_policy(self, seed: int) -> EvictionPolicy:
        return make_policy(self.eviction, self.eviction_args, seed=seed)


class Job:
    """One request's life on a worker (times in seconds)."""

    __slots__ = ("cached", "computed", "done", "est_uncached", "finish", "first_token",
                 "generated", "handle", "need", "parked", "queued", "req", "start", "worker")

    def __init__(self, req: Request, worker: int, now: float) -> None:
        self.req = req
        self.worker = worker
        self.queued = now  # reached the worker
        self.start = -1.0  # admitted
        self.first_token = -1.0
        self.finish = -1.0
        self.cached = 0
        self.computed = 0  # prompt tokens in the KV cache so far (hit + prefilled)
        self.generated = 0
        self.need = 0  # pool tokens reserved at admission
        self.handle: Node | None = None
        self.done = False
        self.est_uncached = 0  # prompt tokens not cached when it reached the worker
        self.parked: Runs | None = None  # the prompt while parked (req.tokens is a stand-in)

    def park(self) -> None:
        """Keep the prompt as runs, if compact, until :meth:`unpark`; ``req`` becomes a
        copy whose ``tokens`` is a zero-stride stand-in of the right length (no memory)."""
        if self.parked is not None:
            return
        runs = Runs.compact(self.req.tokens, COMPACT_RATIO)
        if runs is not None:
            self.parked = runs
            self.req = replace(self.req, tokens=np.broadcast_to(np.int64(0), (len(runs),)))

    def unpark(self) -> None:
        """Give ``req`` its prompt array back."""
        if self.parked is not None:
            self.req = replace(self.req, tokens=self.parked.array())
            self.parked = None


class SimWorker:
    """One worker. Callbacks: ``on_first_token(job)`` and ``on_finish(job)`` when a request's
    first and last tokens are out; ``on_step(worker)`` when a step starts or it goes idle;
    ``on_token(job)`` (optional, for streaming) whenever ``job.generated`` increases, once
    per step per request, after ``on_first_token`` and before ``on_finish``."""

    def __init__(self, index: int, model: StepModel, config: WorkerConfig,
                 loop: EventLoop | RealtimeLoop,
                 on_finish: Callable[[Job], None], seed: int = 0,
                 on_step: Callable[[SimWorker], None] | None = None,
                 on_first_token: Callable[[Job], None] | None = None,
                 on_token: Callable[[Job], None] | None = None) -> None:
        self.index = index
        self.model = model
        self.config = config
        self.capacity = config.capacity or model.kv_pool_tokens
        self.cache = RadixCache(self.capacity, config.make_policy(seed),
                                page_size=config.page_size)
        self.loop = loop
        self.on_finish = on_finish
        self.on_step = on_step
        self.on_first_token = on_first_token
        self.on_token = on_token
        self.waiting: deque[Job] = deque()
        self.prefilling: deque[Job] = deque()  # admitted, prompt not fully computed
        self.decoding: list[Job] = []
        self.reserved = 0  # pool tokens held by admitted requests, outside the tree
        self.decode_context = 0  # sum of context lengths over self.decoding
        self.adapters: dict[str, int] = {}  # running requests per LoRA adapter
        self.busy = False
        self.busy_time = 0.0
        self.steps = 0
        self.prefill_tokens = 0  # prompt tokens computed (work done, for conservation checks)
        self.decode_tokens = 0  # tokens produced by decode steps
        self.debug = False

    # ---------------------------------------------------------------- state
    @property
    def running(self) -> int:
        return len(self.prefilling) + len(self.decoding)

    @property
    def used_tokens(self) -> int:
        """Pool tokens in use: the cache plus admitted requests' reservations."""
        return self.cache.total + self.reserved

    @property
    def held_tokens(self) -> int:
        """Pool tokens that eviction cannot free: the locked cache and the reservations
        (what an engine reports as in use: SGLang's ``token_usage`` leaves the evictable
        cache out, vLLM's usage counts cached blocks no request holds as free)."""
        return self.cache.locked + self.reserved

    def predict_e2e(self, tokens: np.ndarray, output_len: int) -> float:
        """Seconds a request would take if it came now, from the true cache and queue: the
        prefill backlog plus its own uncached prompt in chunks (only its own attention
        priced, on the last chunk), then its decode steps beside the current decodes
        (admission waits and later arrivals are ignored)."""
        m, chunk = self.model, self.config.chunk_size
        hit = min(self.cache.peek(tokens), len(tokens) - 1)
        own = len(tokens) - hit
        backlog = (sum(j.req.prompt_len - j.computed for j in self.prefilling)
                   + sum(j.est_uncached for j in self.waiting))
        full, last = divmod(backlog + own, chunk)  # own >= 1, so there is a last chunk
        if last == 0:
            full, last = full - 1, chunk
        t = full * m.step_time(chunk, 0.0, 0) + m.step_time(last, prefill_pairs(own, hit), 0)
        batch = len(self.decoding) + len(self.prefilling) + len(self.waiting) + 1
        ctx = self.decode_context + len(tokens)
        return t + (output_len - 1) * m.step_time(batch, 0.0, ctx)

    def stats(self) -> dict[str, float]:
        return {"busy_s": self.busy_time, "steps": self.steps,
                "prefill_tokens": self.prefill_tokens, "decode_tokens": self.decode_tokens}

    def fits(self, req: Request) -> bool:
        return req.prompt_len + req.output_len <= self.capacity

    # ---------------------------------------------------------------- events
    def submit(self, job: Job) -> None:
        if not self.fits(job.req):
            raise ConfigError(
                f"request {job.req.rid} needs {job.req.prompt_len + job.req.output_len} KV "
                f"tokens, more than the worker's pool of {self.capacity}; raise --capacity")
        job.est_uncached = job.req.prompt_len - self.cache.peek(job.req.tokens)
        job.park()
        self.waiting.append(job)
        if not self.busy:
            self.busy = True  # a step is planned
            self.loop.at(self.loop.now, WAKE, self._start_step)

    def _admit(self, job: Job, now: float) -> bool:
        job.unpark()  # the head of the queue: it keeps its array until it finishes
        req = job.req
        cache = self.cache
        hit, handle = cache.match(req.tokens, now)
        cache.lock(handle)
        cached = min(hit, req.prompt_len - 1)
        need = req.prompt_len - cached + req.output_len
        if need > self.capacity - self.reserved - cache.locked:
            cache.unlock(handle)
            return False
        self.reserved += need
        over = cache.total + self.reserved - self.capacity
        if over > 0:
            cache.evict(need if cache.eviction_request == "allocation" else over)
        job.handle, job.cached, job.computed, job.need = handle, cached, cached, need
        job.start = now
        return True

    def _start_step(self) -> None:
        now = self.loop.now
        budget = self.config.chunk_size
        chunks: list[tuple[Job, int]] = []
        pairs = 0.0
        for job in self.prefilling:  # the partly prefilled request(s) first
            if budget <= 0:
                break
            n = min(job.req.prompt_len - job.computed, budget)
            chunks.append((job, n))
            pairs += prefill_pairs(n, job.computed)
            budget -= n
        limit, loras = self.config.max_running, self.config.max_loras
        i = 0  # the first waiting request not passed over for want of an adapter slot
        while budget > 0 and i < len(self.waiting) and (limit is None or self.running < limit):
            job = self.waiting[i]
            adapter = job.req.adapter
            if (loras is not None and adapter is not None and adapter not in self.adapters
                    and len(self.adapters) >= loras):
                i += 1  # no adapter slot: it waits, the requests behind it go on
                continue
            if not self._admit(job, now):
                break
            if adapter is not None:
                self.adapters[adapter] = self.adapters.get(adapter, 0) + 1
            del self.waiting[i]
            self.prefilling.append(job)
            n = min(job.req.prompt_len - job.computed, budget)
            chunks.append((job, n))
            pairs += prefill_pairs(n, job.computed)
            budget -= n
        decode = not chunks or self.config.mixed_chunk
        n_decode = len(self.decoding) if decode else 0
        if not chunks and not n_decode:
            self.busy = False
            if self.on_step is not None:
                self.on_step(self)
            return
        new_tokens = self.config.chunk_size - budget + n_decode
        dt = self.model.step_time(new_tokens, pairs, self.decode_context if decode else 0)
        self.busy = True
        self.busy_time += dt
        self.steps += 1
        self.prefill_tokens += self.config.chunk_size - budget
        self.decode_tokens += n_decode
        if self.on_step is not None:
            self.on_step(self)
        self.loop.at(now + dt, STEP_END, self._end_step, chunks, decode)

    def _end_step(self, chunks: list[tuple[Job, int]], decode: bool) -> None:
        now = self.loop.now
        finished: list[Job] = []
        progressed: list[Job] | None = None
        if self.on_token is not None:
            progressed = list(self.decoding) if decode else []
            progressed += [job for job, n in chunks if job.computed + n == job.req.prompt_len]
        if decode:
            for job in self.decoding:
                job.generated += 1
                if job.generated == job.req.output_len:
                    finished.append(job)
            self.decode_context += len(self.decoding)
        for job, n in chunks:
            job.computed += n
            if job.computed == job.req.prompt_len:
                self.prefilling.remove(job)
                self._store_prompt(job, now)
                job.first_token = now
                job.generated = 1
                if job.req.output_len == 1:
                    finished.append(job)
                else:
                    self.decoding.append(job)
                    self.decode_context += job.req.prompt_len + 1
        if finished:
            for job in finished:
                self._finish(job, now)
            self.decoding = [j for j in self.decoding if not j.done]
        if self.debug:
            self.check_integrity()
        self._start_step()
        if self.on_first_token is not None:  # after the next step is planned
            for job, _ in chunks:
                if job.first_token == now:
                    self.on_first_token(job)
        if progressed is not None and self.on_token is not None:
            for job in progressed:
                self.on_token(job)
        for job in finished:
            self.on_finish(job)

    def _store_prompt(self, job: Job, now: float) -> None:
        """Move a prefilled prompt into the tree (locked), as SGLang's cache_unfinished_req:
        later requests can hit it while this one is still decoding."""
        cache = self.cache
        cache.insert(job.req.tokens, now)
        handle = cache.match(job.req.tokens, now).handle
        cache.lock(handle)
        assert job.handle is not None
        cache.unlock(job.handle)
        job.handle = handle
        uncached = job.req.prompt_len - job.cached
        self.reserved -= uncached
        job.need -= uncached

    def _finish(self, job: Job, now: float) -> None:
        req = job.req
        cache = self.cache
        cache.insert(np.concatenate([req.tokens, output_ids(req)]), now)
        assert job.handle is not None
        cache.unlock(job.handle)
        self.reserved -= job.need
        if req.output_len > 1:  # it was decoding
            self.decode_context -= req.prompt_len + job.generated
        over = cache.total + self.reserved - self.capacity
        if over > 0:
            cache.evict(over)
        job.handle = None
        job.finish = now
        job.done = True
        if req.adapter is not None:
            left = self.adapters[req.adapter] - 1
            if left:
                self.adapters[req.adapter] = left
            else:
                del self.adapters[req.adapter]

    def check_integrity(self) -> None:
        """The cache's invariants, and the pool: cache + reservations within capacity."""
        from kvroute.errors import IntegrityError

        self.cache.check_integrity()
        if self.cache.total + self.reserved > self.capacity:
            raise IntegrityError(f"worker {self.index}: pool over capacity "
                                 f"({self.cache.total} + {self.reserved} > {self.capacity})")
        ctx = sum(j.req.prompt_len + j.generated for j in self.decoding)
        if ctx != self.decode_context:
            raise IntegrityError(f"worker {self.index}: decode context {self.decode_context} "
                                 f"!= {ctx}")
        running: dict[str, int] = {}
        for j in [*self.prefilling, *self.decoding]:
            if j.req.adapter is not None:
                running[j.req.adapter] = running.get(j.req.adapter, 0) + 1
        loras = self.config.max_loras
        if running != self.adapters or (loras is not None and len(running) > loras):
            raise IntegrityError(f"worker {self.index}: adapters {self.adapters} running, "
                                 f"counted {running} (at most {loras})")
