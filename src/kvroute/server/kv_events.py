"""The live router's KV-event feeds: the engines' cache events, as exact per-worker indexes.

Contract:

* A worker's feed is given as ``ENDPOINT[,REPLAY]`` (:func:`parse_feed`): the ZMQ address
  its engine publishes on and, optionally, its replay socket, e.g.
  ``tcp://10.0.0.5:5557,tcp://10.0.0.5:5558``; ``-`` means no events for that worker.
* :class:`KvEventFeeds` keeps one feed per worker URL: an
  :class:`~kvroute.events.AsyncEventSubscriber` (engine ``vllm`` or ``sglang``), the
  :class:`~kvroute.events.BlockIndex` it fills, and a task that polls it. ``add(url,
  spec)`` starts one and attaches it to the :class:`~kvroute.routing.router.Router` as
  that worker's exact source (:class:`~kvroute.events.exact_source.BlockIndexSource`: it
  is believed while the subscriber is in sync, see ``docs/events.md``); ``remove(url)``
  stops it (the router drops the source with the worker). Feeds are matched to the
  router's workers through :class:`~kvroute.server.membership.Membership` at attach time.
* The first poll replays the engine's buffered history (a router restart rebuilds its
  index); gaps and engine restarts are the subscriber's. A task never dies of a bad
  message: decode errors are counted.
* :meth:`KvEventFeeds.collect` exports, per worker: ``kvroute_kv_events_total{worker,
  kind}``, ``kvroute_kv_event_decode_errors_total{worker, reason}``,
  ``kvroute_kv_event_batches_total``, ``_gaps_total``, ``_lost_total``,
  ``_replays_total``, ``_replay_failures_total``, ``_restarts_total``,
  ``kvroute_kv_event_lag_seconds`` (router clock minus the batch's engine timestamp),
  ``kvroute_kv_events_in_sync`` and ``kvroute_kv_index_tokens`` (tokens held).
* Needs the ``events`` extra; without it, :func:`load_events` raises a one-line
  ConfigError naming it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kvroute.errors import ConfigError
from kvroute.routing.router import Router
from kvroute.server.membership import Membership

if TYPE_CHECKING:
    from kvroute.events import AsyncEventSubscriber, BlockIndex

__all__ = ["FeedSpec", "KvEventFeeds", "load_events", "parse_feed", "parse_feeds", "rank_feeds"]

log = logging.getLogger("kvroute.server")

ENGINES = ("vllm", "sglang")


@dataclass(frozen=True)
class FeedSpec:
    endpoint: str
    replay: str | None = None

    def __str__(self) -> str:
        return self.endpoint + (f",{self.replay}" if self.replay else "")


def _endpoint(text: str, spec: str) -> str:
    e = text.strip()
    if "://" not in e or e.endswith("://"):
        raise ConfigError(f"KV-events endpoint {e!r} in {spec!r} is not a ZMQ address "
                          "such as tcp://127.0.0.1:5557")
    return e


def parse_feed(spec: str | None) -> FeedSpec | None:
    """``ENDPOINT[,REPLAY]`` -> a FeedSpec; ``-``, ``none``, empty or None -> None."""
    if spec is None or spec.strip().lower() in ("", "-", "none"):
        return None
    parts = spec.split(",")
    if len(parts) > 2:
        raise ConfigError(f"--kv-events takes ENDPOINT[,REPLAY] per worker, got {spec!r}")
    replay = _endpoint(parts[1], spec) if len(parts) == 2 else None
    return FeedSpec(_endpoint(parts[0], spec), replay)


def parse_feeds(specs: list[str] | None, workers: int) -> list[FeedSpec | None]:
    """One spec per worker, in the order of ``--worker-urls`` (none given: no events)."""
    if not specs:
        return [None] * workers
    if len(specs) != workers:
        raise ConfigError(f"--kv-events needs one entry per worker URL ('-' for none): "
                          f"{len(specs)} for {workers} workers")
    return [parse_feed(s) for s in specs]


def rank_feeds(specs: list[str] | None, ranks: int) -> list[str] | None:
    """Each engine's ``ENDPOINT[,REPLAY]`` (or ``-``) as the feeds of its ``ranks``
    data-parallel ranks, in the order of :func:`~kvroute.server.membership.with_ranks`:
    rank r's ports offset by r, where vLLM publishes them."""
    if not specs or ranks == 1:
        return specs
    load_events()  # the extra's error, if it is missing
    from kvroute.events.wire import offset_endpoint

    out = []
    for spec in specs:
        feed = parse_feed(spec)
        for r in range(ranks):
            if feed is None:
                out.append("-")
            else:
                replay = "" if feed.replay is None else f",{offset_endpoint(feed.replay, r)}"
                out.append(offset_endpoint(feed.endpoint, r) + replay)
    return out


def load_events() -> Any:
    """The ``kvroute.events`` package (ConfigError without the ``events`` extra)."""
    import kvroute.events as events  # raises the extra's ConfigError itself

    return events


class _Feed:
    def __init__(self, url: str, spec: FeedSpec, sub: AsyncEventSubscriber,
                 index: BlockIndex) -> None:
        self.url = url
        self.spec = spec
        self.sub = sub
        self.index = index
        self.task: asyncio.Task[None] | None = None

    async def run(self, poll_s: float) -> None:
        while True:
            try:
                events = await self.sub.poll(poll_s)
            except asyncio.CancelledError:
                raise
            except Exception:  # never let one feed die: count and go on
                log.exception("KV events of %s: poll failed", self.url)
                await asyncio.sleep(poll_s)
                continue
            if events:
                self.index.apply_all(events)

    def status(self) -> dict[str, Any]:
        c = self.sub.counters()
        return {"endpoint": str(self.spec), "in_sync": c["in_sync"], "batches": c["batches"],
                "events": c["events"], "gaps": c["gaps"], "lost": c["lost"],
                "replays": c["replays"], "decode_errors": c["decode_errors"],
                "lag_s": c["lag_s"], "blocks": len(self.index)}


class KvEventFeeds:
    """Every worker's KV-event feed (see the module doc)."""

    def __init__(self, router: Router, members: Membership, *, engine: str = "vllm",
                 poll_s: float = 0.05) -> None:
        if engine not in ENGINES:
            raise ConfigError(f"--kv-events-engine must be one of {', '.join(ENGINES)}, "
                              f"got {engine!r}")
        self.router = router
        self.members = members
        self.engine = engine
        self.poll_s = poll_s
        self.feeds: dict[str, _Feed] = {}
        self._running = False

    def __len__(self) -> int:
        return len(self.feeds)

    def add(self, url: str, spec: FeedSpec) -> None:
        """Subscribe to ``url``'s engine and make it that worker's exact source."""
        ev = load_events()
        k = self.members.find(url)
        if k is None:
            raise ConfigError(f"worker {url} is not a member")
        url = self.members.workers[k].url
        self.remove(url)
        sub = ev.AsyncEventSubscriber(spec.endpoint, replay_endpoint=spec.replay,
                                      engine=self.engine)
        index = ev.BlockIndex()
        feed = _Feed(url, spec, sub, index)
        self.feeds[url] = feed
        self.router.attach_exact(k, ev.BlockIndexSource(index, lambda: sub.in_sync))
        if self._running:
            feed.task = asyncio.create_task(feed.run(self.poll_s))
        log.info("KV events of %s from %s (%s)", url, spec, self.engine)

    def remove(self, url: str) -> None:
        """Stop ``url``'s feed, if it has one (the router forgets the source with the
        worker; a member that stays goes back to the approximate index)."""
        feed = self.feeds.pop(url, None)
        if feed is None:
            return
        if feed.task is not None:
            feed.task.cancel()
        feed.sub.close()
        k = self.members.find(url)
        if k is not None:
            self.router.detach_exact(k)

    def start(self) -> None:
        self._running = True
        for feed in self.feeds.values():
            if feed.task is None:
                feed.task = asyncio.create_task(feed.run(self.poll_s))

    async def close(self) -> None:
        self._running = False
        feeds = list(self.feeds.values())
        self.feeds.clear()
        for feed in feeds:
            if feed.task is not None:
                feed.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await feed.task
            feed.sub.close()

    def status(self, url: str) -> dict[str, Any] | None:
        feed = self.feeds.get(url)
        return None if feed is None else feed.status()

    # --- Prometheus -------------------------------------------------------------------
    def describe(self) -> list[Any]:
        return []  # families are made at collection time

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        events = CounterMetricFamily("kvroute_kv_events", "KV events decoded, by worker "
                                     "and kind", labels=["worker", "kind"])
        errors = CounterMetricFamily("kvroute_kv_event_decode_errors", "KV events or "
                                     "batches that could not be decoded, by reason",
                                     labels=["worker", "reason"])
        counters = {name: CounterMetricFamily(f"kvroute_kv_event_{name}", help_,
                                              labels=["worker"])
                    for name, help_ in (
                        ("batches", "KV-event batches applied"),
                        ("gaps", "Sequence gaps detected on the live stream"),
                        ("lost", "Sequence numbers never recovered"),
                        ("replays", "Replays completed"),
                        ("replay_failures", "Replays that timed out"),
                        ("restarts", "Engine restarts detected"))}
        lag = GaugeMetricFamily("kvroute_kv_event_lag_seconds", "Router clock minus the "
                                "engine timestamp of the last batch applied", labels=["worker"])
        in_sync = GaugeMetricFamily("kvroute_kv_events_in_sync", "1 while the worker's "
                                    "exact index is believed", labels=["worker"])
        tokens = GaugeMetricFamily("kvroute_kv_index_tokens", "Tokens the exact index holds",
                                   labels=["worker"])
        for url, feed in list(self.feeds.items()):
            c = feed.sub.counters()
            for kind, n in sorted(c["events"].items()):
                events.add_metric([url, kind], n)
            for reason, n in sorted(c["decode_errors"].items()):
                errors.add_metric([url, reason], n)
            for name, fam in counters.items():
                fam.add_metric([url], c[name])
            if c["lag_s"] is not None:
                lag.add_metric([url], c["lag_s"])
            in_sync.add_metric([url], 1.0 if c["in_sync"] else 0.0)
            tokens.add_metric([url], feed.index.held_tokens())
        yield events
        yield errors
        yield from counters.values()
        yield lag
        yield in_sync
        yield tokens
