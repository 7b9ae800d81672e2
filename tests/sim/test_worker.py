"""The simulated worker on tiny cases computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from kvroute.errors import ConfigError
from kvroute.sim.events import ARRIVAL, STEP_END, WAKE, EventLoop
from kvroute.sim.step_model import StepModel
from kvroute.sim.worker import Job, SimWorker, WorkerConfig
from kvroute.workloads.request import Request


def model(t_w: float = 0.0, t0: float = 0.0, b: float = 1.0, c: float = 0.0, g: float = 0.0,
          pool: int = 10_000) -> StepModel:
    return StepModel(name="hand", t_w_ms=t_w, t0_ms=t0, b_ms=b, c_ms=c, g_ms=g,
                     kv_pool_tokens=pool)


def run(reqs: list[Request], m: StepModel, **cfg: object) -> list[Job]:
    loop = EventLoop()
    done: list[Job] = []
    worker = SimWorker(0, m, WorkerConfig(**cfg), loop, done.append)  # type: ignore[arg-type]
    worker.debug = True
    for r in reqs:
        loop.at(r.arrival, ARRIVAL, lambda r=r: worker.submit(Job(r, 0, loop.now)))
    loop.run()
    assert worker.reserved == 0 and worker.cache.locked == 0
    return sorted(done, key=lambda j: j.req.rid)


def req(rid: int, tokens: np.ndarray | list[int], out: int = 3, t: float = 0.0) -> Request:
    return Request(rid=rid, tokens=np.asarray(tokens, dtype=np.int64), output_len=out, arrival=t)


def test_one_request_prefill_then_decode_steps() -> None:
    """100-token prompt, 3 outputs, 1 ms/token, 10 ms floor: TTFT 100 ms, then 2 x 10 ms."""
    (job,) = run([req(0, range(100))], model(t_w=10.0))
    assert job.cached == 0 and job.start == 0.0
    assert job.first_token == pytest.approx(0.100)
    assert job.finish == pytest.approx(0.120)


def test_shared_prefix_is_a_hit_and_saves_linear_work_only() -> None:
    """B shares A's 50-token prefix: 50 cached, prefill of 50 tokens with h=50 in attention."""
    a = req(0, list(range(50)) + list(range(1000, 1050)), out=2)
    b = req(1, list(range(50)) + list(range(2000, 2050)), out=2, t=1.0)
    m = model(b=1.0, c=0.01)
    ja, jb = run([a, b], m)
    assert ja.cached == 0 and jb.cached == 50
    # A: 100 ms + c * 100 * (0 + 50) = 100 + 50 ms; decode: 1 token, 1 ms
    assert ja.first_token == pytest.approx(0.150)
    assert ja.finish == pytest.approx(0.151)
    # B: 50 ms + c * 50 * (50 + 25) = 50 + 37.5 ms
    assert jb.first_token - 1.0 == pytest.approx(0.0875)


def test_full_hit_still_computes_the_last_token() -> None:
    """A repeated prompt is cached up to prompt - 1 tokens, as an engine reports it."""
    _, jb = run([req(0, range(40), out=1), req(1, range(40), out=1, t=1.0)], model())
    assert jb.cached == 39
    assert jb.first_token - 1.0 == pytest.approx(0.001)


def test_admission_blocked_by_kv_pool() -> None:
    """Pool 150: A holds 102 tokens, so B (102 more) waits until A finishes and is stored."""
    a = req(0, range(100), out=2)
    b = req(1, range(500, 600), out=2)
    ja, jb = run([a, b], model(pool=150))
    assert jb.start == pytest.approx(ja.finish)  # 0.101
    assert jb.queued == 0.0 and jb.cached == 0
    assert jb.first_token == pytest.approx(ja.finish + 0.100)


def test_the_pool_in_use_as_an_engine_reports_it_leaves_the_evictable_cache_out() -> None:
    """While A decodes, its stored prompt (100, locked) and its output's reservation (3)
    are held; once it finishes, prompt and output stay cached (103 tokens) but nothing is
    held: SGLang's token_usage would read 0 there, the pool's fill 103."""
    loop = EventLoop()
    worker = SimWorker(0, model(), WorkerConfig(), loop, lambda job: None)
    seen = []
    loop.at(0.0, ARRIVAL, lambda: worker.submit(Job(req(0, range(100)), 0, loop.now)))
    loop.at(0.1005, WAKE, lambda: seen.append((worker.held_tokens, worker.used_tokens)))
    loop.run()
    assert seen == [(103, 103)]
    assert (worker.held_tokens, worker.used_tokens, worker.cache.total) == (0, 103, 103)


def test_admission_batches_what_fits() -> None:
    """Two small requests arriving together are prefilled in one step (batching)."""
    ja, jb = run([req(0, range(30), out=2), req(1, range(100, 130), out=2)], model(t_w=5.0))
    assert ja.first_token == jb.first_token == pytest.approx(0.060)
    assert ja.finish == jb.finish == pytest.approx(0.065)  # one decode step for both


def test_chunked_prefill() -> None:
    """Chunk 64: a 150-token prompt takes steps of 64, 64, 22 tokens, attention by chunk."""
    m = model(b=1.0, c=0.001)
    (job,) = run([req(0, range(150), out=1)], m, chunk_size=64)
    pairs = 64 * 32 + 64 * (64 + 32) + 22 * (128 + 11)
    assert job.first_token == pytest.approx((150 + 0.001 * pairs) / 1000)


def test_decode_attention_reads_context() -> None:
    """Decode step time includes g per context token: context 11 then 12."""
    (job,) = run([req(0, range(10), out=3)], model(b=0.0, t0=1.0, g=1.0))
    # prefill: 1 ms; decode 1: context 11 -> 1 + 11; decode 2: context 12 -> 1 + 12
    assert job.finish == pytest.approx((1 + 12 + 13) / 1000)


def test_prompt_larger_than_pool_is_an_error() -> None:
    """A request that can never fit is refused with a message, not queued forever."""
    with pytest.raises(ConfigError, match="pool"):
        run([req(0, range(100), out=2)], model(pool=50))


def test_optimal_eviction_is_refused_online() -> None:
    """The offline optimum cannot run inside an online worker."""
    with pytest.raises(ConfigError, match="ceiling"):
        WorkerConfig(eviction="optimal")


def test_event_tie_break_order() -> None:
    """Same time: STEP_END, ARRIVAL, WAKE; same time and priority: first scheduled first."""
    loop = EventLoop()
    seen: list[str] = []
    loop.at(1.0, WAKE, seen.append, "wake")
    loop.at(1.0, ARRIVAL, seen.append, "arrival-1")
    loop.at(1.0, STEP_END, seen.append, "step-1")
    loop.at(1.0, ARRIVAL, seen.append, "arrival-2")
    loop.at(0.5, ARRIVAL, seen.append, "early")
    loop.at(1.0, STEP_END, seen.append, "step-2")
    loop.run()
    assert seen == ["early", "step-1", "step-2", "arrival-1", "arrival-2", "wake"]
    with pytest.raises(ConfigError):
        loop.at(0.1, ARRIVAL, seen.append, "past")


def test_a_request_without_an_adapter_slot_is_passed_over() -> None:
    """max_loras 1: B (adapter y) waits while A (x) runs; C (x again) and D (the base
    model) behind B are admitted at once; B starts when A and C have finished."""
    def lora(rid: int, base: int, adapter: str | None) -> Request:
        r = req(rid, range(base, base + 10), out=5)
        r.adapter = adapter
        return r

    a, b, c, d = lora(0, 0, "x"), lora(1, 100, "y"), lora(2, 200, "x"), lora(3, 300, None)
    ja, jb, jc, jd = run([a, b, c, d], model(t_w=10.0), max_loras=1)
    assert ja.start == jc.start == jd.start == 0.0
    assert jb.start == pytest.approx(max(ja.finish, jc.finish))
    # without the cap all four start together
    assert {j.start for j in run([a, b, c, d], model(t_w=10.0))} == {0.0}


def test_max_loras_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="max_loras"):
        WorkerConfig(max_loras=0)
