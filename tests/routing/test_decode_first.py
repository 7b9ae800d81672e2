"""``learned`` holds a request back while every worker has prefill queued and the requests
decoding have less predicted decode time left than its own prefill (decode_first)."""

from __future__ import annotations

import numpy as np
import pytest

from kvroute.errors import ConfigError
from kvroute.routing.base import RouteRequest
from kvroute.routing.learned import Learned
from kvroute.routing.router import Dispatch, Router

# Priors (prior_ktoken_s 0.1): prefill 0.1 s per 1000 uncached units plus 0.005 s per 1e6
# attention pairs; decode 0.02 s per token plus 0.001 s per token per request in flight.


def _req(start: int, n: int, out: int = 4, streamed: bool = True) -> RouteRequest:
    return RouteRequest(np.arange(start, start + n, dtype=np.int64), max_tokens=out,
                        streamed=streamed)


def _busy_cluster(out: int = 4, streamed: bool = True, late_binding: bool = True
                  ) -> tuple[Router, Learned, Dispatch, Dispatch]:
    """Two workers, both with a prefill queued, and one request decoding (``out`` tokens,
    its first token at 0.05 s). Returns the router, the policy, the decoding dispatch and
    the last one (on the worker that did not decode)."""
    policy = Learned(late_binding=late_binding)
    router = Router(policy, 2)
    a = router.route(_req(0, 300, out), 0.0)
    router.first_token(a, 0.05)
    other = 1 - a.worker
    router.route(_req(10_000, 300), 0.05, [w == a.worker for w in range(2)])
    last = router.route(_req(20_000, 300, streamed=streamed), 0.05,
                        [w == other for w in range(2)])
    return router, policy, a, last


def test_held_while_the_decodes_left_are_shorter_than_its_prefill() -> None:
    """The decoding request was predicted 3 tokens x 0.021 s = 0.063 s of decode. A fresh
    1000-unit prompt needs 0.1 + 0.0025 = 0.1025 s of prefill: held. A 500-unit one needs
    0.05 + 0.000625 = 0.0506 s, less than the decode left: routed."""
    router, policy, decoding, _ = _busy_cluster()
    rec = policy.open[decoding.req.rid]
    assert rec.pred_e2e - rec.pred_ttft == pytest.approx(0.063)
    assert router.hold(_req(50_000, 1000), 0.05)
    assert not router.hold(_req(60_000, 500), 0.05)
    # later, less decode is left: the 500-unit prompt is held too
    assert router.hold(_req(60_000, 500), 0.05 + 0.063 - 0.04)


def test_long_decodes_are_never_held_for() -> None:
    """A request decoding 1000 tokens (about 21 s left): even a 1000-unit prompt goes now."""
    router, *_ = _busy_cluster(out=1000)
    assert not router.hold(_req(50_000, 1000), 0.05)


def test_a_worker_without_prefill_queued_takes_it_at_once() -> None:
    router, _, _, last = _busy_cluster()
    assert router.hold(_req(50_000, 1000), 0.06)
    router.first_token(last, 0.07)  # its worker's queued prefill is done
    assert not router.hold(_req(50_000, 1000), 0.07)
    # and a worker the request may not go to does not count
    assert router.hold(_req(50_000, 1000), 0.07, [last.worker != w for w in range(2)])


def test_a_request_that_does_not_stream_counts_as_prefilling_until_its_predicted_first_token(
        ) -> None:
    router, policy, _, last = _busy_cluster(streamed=False)
    due = last.sent_at + policy.open[last.req.rid].pred_ttft
    assert router.hold(_req(50_000, 1000), due - 0.01)
    assert not router.hold(_req(50_000, 1000), due + 0.01)


def test_nothing_decoding_nothing_held() -> None:
    policy = Learned()
    router = Router(policy, 2)
    for w in range(2):
        router.route(_req(1000 * w, 300), 0.0, [v == w for v in range(2)])
    assert not router.hold(_req(50_000, 100_000), 0.01)


def test_late_binding_off_holds_nothing() -> None:
    router, *_ = _busy_cluster(late_binding=False)
    assert not router.hold(_req(50_000, 1000), 0.05)
    with pytest.raises(ConfigError, match="late_binding must be true or false"):
        Learned(late_binding=1)  # type: ignore[arg-type]


def test_a_request_not_held_is_routed_with_one_walk_of_the_index() -> None:
    """The hold check reads the match with the last-sent times, the decision reuses both;
    a prompt whose prefill bounds decide is not walked at all by the check."""
    router, *_ = _busy_cluster()
    walks = []
    caches = router.caches
    for name in ("match", "match_last_sent"):
        inner = getattr(caches, name)

        def counted(*args, _inner=inner, _name=name, **kwargs):
            walks.append(_name)
            return _inner(*args, **kwargs)

        setattr(caches, name, counted)
    # 300 units held on a worker and 400 new: no bound decides (0.071 s with no hit, far
    # less with all hit, 0.063 s of decode left); with the hit, 0.041 s: not held
    req = RouteRequest(np.concatenate([np.arange(10_000, 10_300), np.arange(70_000, 70_400)]),
                       max_tokens=4)
    assert not router.hold(req, 0.05)
    router.route(req, 0.05)
    assert walks == ["match_last_sent"]
    walks.clear()
    fresh = _req(80_000, 400)  # 0.040 s of prefill even with no hit: no walk
    assert not router.hold(fresh, 0.05)
    assert walks == []
