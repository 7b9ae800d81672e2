"""The live router's worker records: URL checks and logged health transitions."""

from __future__ import annotations

import logging

import pytest

from kvroute.errors import ConfigError
from kvroute.routing import Router, make_router_policy
from kvroute.server.membership import Membership, normalize_url, worker_urls


@pytest.mark.parametrize(("url", "needle"), [
    ("http://", "has no host"),
    ("http:///v1", "has no host"),
    ("ftp://x", "must start with http:// or https://"),
    ("http://a:99999", "is not valid"),
])
def test_bad_worker_urls_say_what_is_wrong(url: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        normalize_url(url)


def test_comma_separated_worker_urls_say_to_use_spaces() -> None:
    """`--worker-urls http://a:1,http://b:2` said 'Port could not be cast to integer'."""
    with pytest.raises(ConfigError, match="separated by spaces, not commas"):
        worker_urls(["http://a:1,http://b:2"])
    with pytest.raises(ConfigError, match="separated by spaces, not commas"):
        worker_urls(["http://a:1", "http://b:2, https://c:3"])
    assert worker_urls(["http://a:1", "http://b:2"]) == ["http://a:1", "http://b:2"]


def test_good_urls_lose_their_trailing_slash() -> None:
    assert normalize_url(" https://gpu1:30000/ ") == "https://gpu1:30000"
    assert normalize_url("http://h/prefix/") == "http://h/prefix"


def test_health_transitions_are_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    """Turning unhealthy is one warning, coming back one info line; steady states log
    nothing."""
    router = Router(make_router_policy("round_robin"), 1)
    m = Membership(["http://a:1"], router, failure_threshold=2)
    w = m.workers[0]
    with caplog.at_level(logging.INFO, logger="kvroute.server"):
        m.record_health(w, True, 0.0)
        m.record_health(w, False, 1.0)
        assert not caplog.records
        m.record_health(w, False, 2.0)
        m.record_health(w, False, 3.0)
        m.record_health(w, True, 4.0)
        m.record_health(w, True, 5.0)
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "worker http://a:1 is unhealthy (2 failed health checks): routing around it"),
        ("INFO", "worker http://a:1 is healthy again: routing to it"),
    ]
    assert m.allowed(6.0).tolist() == [True]
