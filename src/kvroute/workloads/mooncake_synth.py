"""Synthetic Mooncake-format traces of any length, with a real trace's statistics.

The model (fitted by :func:`fit_stats`, sampled by :func:`synth_records`):

* Arrivals are Poisson at ``rate`` requests/s (the Mooncake synthetic trace's
  inter-arrival times have a coefficient of variation of 1.01); timestamps are whole ms.
* A request either starts a fresh chain of new block ids (``1 - reuse``) or continues an
  earlier request, its *parent*: it keeps the parent's chain minus its last ``drop``
  blocks (at least one) and appends ``new`` fresh blocks, ``(drop, new)`` drawn from
  ``edits``. In the trace a request's reused blocks are always a prefix (never a block
  in the middle), so this is the whole reuse structure. The parent is drawn as the
  request ``distance`` requests back, accepted with a probability proportional to
  ``child_rate`` of its chain length's bucket (``floor(log2(blocks))``, the last bucket
  open-ended), else drawn again (up to 100 times, then kept): in the trace 2% of
  one-block requests are continued and 50-75% of those of 3 blocks or more.
* Fresh chains have ``fresh_blocks`` blocks; the last block holds ``tail`` tokens
  (``input_length = (blocks - 1) * block_size + tail``); ``output_length`` is drawn on
  its own. Each of these is given by its quantiles at :data:`QUANTILES` and sampled by
  linear interpolation of the inverse CDF.

:func:`fit_stats` measures the same things on a trace: ``reuse`` is the fraction of
requests whose first block was seen before; their parent is the latest earlier request
holding the last reused block (Mooncake ids are chained hashes: a block id fixes the
whole prefix before it) and ``drop`` is how many of its blocks were not reused.

:data:`MOONCAKE_SYNTHETIC` holds the numbers that ``fit_stats`` gives on the public
Mooncake synthetic trace (FAST'25 release, ``synthetic_trace.jsonl``, 3,993 requests):
``python benchmarks/make_trace.py --fit PATH`` prints them. No data of the trace is kept.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np

from kvroute.errors import ConfigError
from kvroute.workloads.mooncake import MooncakeRecord

__all__ = ["MOONCAKE_SYNTHETIC", "QUANTILES", "SHAPES", "TraceStats", "block_repeat_fraction",
           "fit_stats", "synth_records"]

#: the percentiles at which each length distribution is kept
#: log2 buckets of chain length for ``child_rate`` (the last one open-ended)
BUCKETS = 9

QUANTILES = (0.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 35.0, 40.0, 45.0, 50.0, 55.0, 60.0,
             65.0, 70.0, 75.0, 80.0, 85.0, 90.0, 95.0, 99.0, 100.0)


@dataclass(frozen=True)
class TraceStats:
    rate: float  # requests per second
    reuse: float  # fraction of requests that continue an earlier one
    fresh_blocks: tuple[float, ...]  # quantiles: blocks of a fresh chain
    tail: tuple[float, ...]  # quantiles: tokens in the last block (1 .. block_size)
    output_length: tuple[float, ...]  # quantiles
    distance: tuple[float, ...]  # quantiles: requests back to the parent
    edits: tuple[tuple[int, int, float], ...]  # (drop, new, probability)
    child_rate: tuple[float, ...]  # per log2 length bucket: children per request
    block_size: int = 512

    def to_json(self) -> str:
        return json.dumps(asdict(self))


def _q(values: Sequence[float] | np.ndarray) -> tuple[float, ...]:
    return tuple(round(float(v), 2) for v in np.percentile(np.asarray(values), QUANTILES))


def fit_stats(records: Sequence[MooncakeRecord], block_size: int = 512,
              max_edits: int = 12) -> TraceStats:
    """The model's statistics measured on ``records`` (in timestamp order)."""
    if len(records) < 2:
        raise ConfigError("fitting a trace needs at least 2 requests")
    ts = np.array([r.timestamp for r in records])
    span = (ts[-1] - ts[0]) / 1000
    holder: dict[int, int] = {}  # block id -> latest request holding it
    lengths: list[int] = []
    fresh, tails, dist = [], [], []
    edits: dict[tuple[int, int], int] = {}
    children = np.zeros(len(records))
    for i, r in enumerate(records):
        h = r.hash_ids.tolist()
        k = 0
        while k < len(h) and h[k] in holder:
            k += 1
        if k:
            parent = holder[h[k - 1]]
            dist.append(i - parent)
            children[parent] += 1
            e = (lengths[parent] - k, len(h) - k)
            edits[e] = edits.get(e, 0) + 1
        else:
            fresh.append(len(h))
        tails.append(r.input_length - (len(h) - 1) * block_size)
        lengths.append(len(h))
        for b in h:
            holder[b] = i
    bucket = _bucket(np.array(lengths))
    per = np.bincount(bucket, weights=children, minlength=BUCKETS)
    count = np.bincount(bucket, minlength=BUCKETS)
    top = sorted(edits.items(), key=lambda kv: (-kv[1], kv[0]))[:max_edits]
    total = sum(c for _, c in top)
    return TraceStats(
        rate=round(float((len(records) - 1) / span), 4) if span > 0 else float("inf"),
        reuse=round(len(dist) / len(records), 4),
        fresh_blocks=_q(fresh or [1]), tail=_q(tails),
        output_length=_q([r.output_length for r in records]),
        distance=_q(dist or [1]),
        edits=tuple((d, n, round(c / total, 4)) for (d, n), c in top),
        child_rate=tuple(round(float(p / c), 4) if c else 0.0 for p, c in zip(per, count,
                                                                              strict=True)),
        block_size=block_size)


def _bucket(blocks: np.ndarray) -> np.ndarray:
    out: np.ndarray = np.minimum(np.log2(np.maximum(blocks, 1)).astype(np.int64), BUCKETS - 1)
    return out


def _draw(rng: np.random.Generator, quantiles: Sequence[float]) -> float:
    return float(np.interp(rng.random() * 100.0, QUANTILES, quantiles))


def synth_records(n: int, stats: TraceStats, seed: int = 1) -> Iterator[MooncakeRecord]:
    """``n`` requests drawn from the model (see the module docstring), in arrival order.
    Memory: every chain is kept (as an int64 array) for later requests to continue."""
    if n < 1:
        raise ConfigError(f"n must be >= 1, got {n}")
    rng = np.random.default_rng(seed)
    bs = stats.block_size
    probs = np.array([p for _, _, p in stats.edits])
    probs = probs / probs.sum() if len(probs) else probs
    rates = np.array(stats.child_rate)
    top_rate = float(rates.max()) if len(rates) else 1.0
    chains: list[np.ndarray] = []
    next_id, t = 0, 0.0
    for i in range(n):
        if i:
            t += rng.exponential(1000.0 / stats.rate)
        if i and len(probs) and rng.random() < stats.reuse:
            for _ in range(100):
                back = min(i, max(1, round(_draw(rng, stats.distance))))
                parent = chains[i - back]
                if rng.random() * top_rate < rates[int(_bucket(np.array(len(parent))))]:
                    break
            drop, new, _ = stats.edits[int(rng.choice(len(probs), p=probs))]
            keep = max(1, len(parent) - drop)
            chain = np.concatenate([parent[:keep], np.arange(next_id, next_id + new)])
        else:
            new = max(1, round(_draw(rng, stats.fresh_blocks)))
            chain = np.arange(next_id, next_id + new, dtype=np.int64)
        next_id += new
        chains.append(chain)
        tail = min(bs, max(1, round(_draw(rng, stats.tail))))
        yield MooncakeRecord(float(int(t)), (len(chain) - 1) * bs + tail,
                             max(1, round(_draw(rng, stats.output_length))), chain)


def block_repeat_fraction(records: Sequence[MooncakeRecord]) -> float:
    """Fraction of all blocks that repeat a block seen earlier (the block-level
    infinite-cache hit rate)."""
    seen: set[int] = set()
    rep = tot = 0
    for r in records:
        h = r.hash_ids.tolist()
        rep += sum(b in seen for b in h)
        tot += len(h)
        seen.update(h)
    return rep / tot if tot else 0.0


#: ``fit_stats`` on the Mooncake synthetic trace (see the module docstring); measured
#: there as well: block repeat fraction 0.6396, mean input 15,325 tokens, mean output 149.
MOONCAKE_SYNTHETIC = TraceStats(
    rate=3.906, reuse=0.4463,
    fresh_blocks=(1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 2.0, 3.0, 8.0, 27.0, 30.0,
                  33.0, 36.0, 42.0, 53.0, 73.0, 108.0, 374.0),
    tail=(1.0, 18.0, 24.0, 30.0, 40.0, 56.0, 78.0, 101.0, 125.0, 157.0, 189.0, 218.0, 251.0,
          279.0, 311.0, 343.0, 380.0, 411.2, 449.8, 476.0, 507.0, 512.0),
    output_length=(1.0, 2.0, 4.0, 6.0, 8.0, 11.0, 16.0, 22.0, 32.0, 49.0, 69.0, 92.0, 126.0,
                   169.0, 210.4, 250.0, 288.6, 332.2, 389.0, 519.0, 768.08, 893.0),
    distance=(1.0, 11.0, 24.0, 40.0, 59.0, 83.0, 113.3, 141.35, 178.0, 218.0, 262.5, 315.0,
              380.0, 452.65, 531.0, 645.5, 771.8, 943.55, 1154.4, 1561.9, 2317.19, 3044.0),
    edits=((1, 1, 0.5968), (0, 0, 0.1227), (2, 2, 0.0881), (1, 2, 0.0513), (2, 1, 0.0397),
           (3, 3, 0.0253), (3, 2, 0.0184), (2, 3, 0.0173), (1, 3, 0.0156), (3, 1, 0.0156),
           (4, 2, 0.0052), (3, 4, 0.004)),
    child_rate=(0.019, 0.0847, 0.7155, 0.8006, 0.5451, 0.552, 0.7529, 0.7838, 0.8),
    block_size=512)


def _quantiles(f: Callable[[float], float]) -> tuple[float, ...]:
    """A distribution's values at :data:`QUANTILES`, from its inverse CDF ``f`` on [0, 1]."""
    return tuple(float(round(f(q / 100.0), 2)) for q in QUANTILES)


#: Trace shapes for checking a policy off the one real trace it was designed on. Only
#: ``mooncake`` is fitted; the others are *invented* variations of it (nothing here is
#: measured on a conversation or agent trace), with the same arrivals, tails and output
#: lengths:
#:
#: * ``conversation``: 3 in 4 requests continue an earlier one, mostly a recent one (the
#:   parent distances are a fifth of the fitted ones), by dropping the partial last block
#:   and appending 1-3 blocks (a turn), or repeating it (1 in 10); any request may be
#:   continued.
#: * ``agentic``: 92% of requests continue a recent one (1-100 requests back, most within
#:   25), appending 1-8 blocks (a tool call and its result); sessions start with 10-60
#:   blocks (5,000-30,000 tokens of instructions and task), so the contexts grow long and
#:   nearly every prompt is a previous one plus a little.
#: * ``fresh``: no request continues another (every prompt is new content, as in traces
#:   that carry only lengths): routing is load balancing alone; the fitted prompts, half
#:   of them one or two blocks and a third 27-108 blocks.
#: * ``fresh_short``: the same with shorter prompts: 1-16 blocks (1 + 15 q^3 at quantile
#:   q: the median prompt about 1,050 tokens, the mean 2,100).
SHAPES: dict[str, TraceStats] = {
    "mooncake": MOONCAKE_SYNTHETIC,
    "conversation": replace(
        MOONCAKE_SYNTHETIC, reuse=0.75,
        distance=tuple(max(1.0, round(d / 5.0, 2)) for d in MOONCAKE_SYNTHETIC.distance),
        edits=((1, 1, 0.5), (1, 2, 0.25), (1, 3, 0.15), (0, 0, 0.1)),
        child_rate=(0.8,) * BUCKETS),
    "agentic": replace(
        MOONCAKE_SYNTHETIC, reuse=0.92,
        fresh_blocks=_quantiles(lambda q: round(10 + 50 * q)),
        distance=_quantiles(lambda q: round(1 + 99 * q * q)),
        edits=((1, 1, 0.4), (1, 2, 0.3), (1, 4, 0.2), (1, 8, 0.1)),
        child_rate=(0.8,) * BUCKETS),
    "fresh": replace(MOONCAKE_SYNTHETIC, reuse=0.0),
    "fresh_short": replace(MOONCAKE_SYNTHETIC, reuse=0.0,
                           fresh_blocks=_quantiles(lambda q: round(1 + 15 * q ** 3))),
}
