"""Replay of request traces in the Mooncake format (FAST'25 traces; AIPerf and
sglang.bench_serving call it "mooncake").

Format: JSONL, one request per line, ``{"timestamp": ms, "input_length": tokens,
"output_length": tokens, "hash_ids": [block ids]}`` (other keys are ignored), UTF-8 with
or without a byte-order mark, optionally gzip-compressed (read as such whatever its name).
Each id stands for one block of ``block_size`` tokens (512 in the released traces); the
last block may be partial. A line is rejected (:class:`ConfigError` naming ``path:line``) unless
``(len(hash_ids) - 1) * block_size < input_length <= len(hash_ids) * block_size``; the
error names the block sizes every line of the file would fit, if there are any.
A file whose first line is not a JSON object is read as a CSV of lengths only (Azure's
and BurstGPT's public traces: :mod:`~kvroute.workloads.length_traces`), each prompt new
content.

The Alibaba Bailian (Qwen) traces (``qwen_traceA_blksz_16.jsonl`` and the like) have the
same four keys plus ``chat_id``, ``parent_chat_id`` (-1 for a conversation's first
request) and ``turn``, but their ``timestamp`` is in seconds and a block is 16 tokens. A
file whose first record has ``chat_id`` or ``parent_chat_id`` is read that way: its
timestamps are taken as seconds (kept in ms, as every record's), the block size defaults
to 16, and each request's ``session`` is its conversation (the first request reached by
following ``parent_chat_id``, numbered from 0 in order of first arrival) and ``turn``
the file's ``turn``. ``block_size`` given explicitly overrides either default.

A conversation's next turn holds the previous one's prompt and reply, and the engines
cache a reply's tokens as they do the prompt's; so in a Bailian trace a request whose
continuation (its first child, by time, whose prompt has all of its whole blocks and is
at least its prompt and output long) is in the file takes its prompt and its output
tokens (``Request.output_tokens``) from the continuation's ids: the prompt's ids that
follow its whole blocks (the ids of a partial block differ between the two: their
contents do) and the output's, so the continuation finds the reply cached, as on an
engine. Without one, the output is unique ids (:func:`~kvroute.workloads.request.output_ids`).
And a request whose parent is replayed too waits for it (``Request.after``): it is sent
no sooner than the parent's completion, and no sooner than the gap between their
timestamps after the parent was sent (``Request.pace``), as its user would. ``time_scale``
and ``rate`` (so ``--load``) scale the times of the other requests, which start
conversations: a faster replay is more users, each at their own pace. ``rate`` is then
the number of requests over the span of those starts: the rate in steady state, which a
replay reaches where its conversations are short against that span (at its beginning and
end fewer conversations overlap).

Contract of :func:`load_mooncake`:

* Token ids: position ``j`` of block ``b`` is ``b * block_size + j``, so equal block ids
  give equal tokens and distinct (block, position) pairs never collide; the prompt is the
  blocks' ids concatenated and cut to ``input_length``. ``output_len`` is
  ``max(1, output_length)``; ``output_tokens`` stays ``None``.
* Records are put in timestamp order (stable). ``session`` and ``turn`` are -1 and 0 but
  in a Bailian trace (above). Selection: first the window
  ``start_time <= timestamp / 1000 < end_time`` (seconds on the trace's own clock), then
  the slice ``[start : start + limit]`` of what is left.
* Arrival (s) = ``(timestamp - t0) / 1000 * time_scale`` with ``t0`` the first selected
  timestamp: ``time_scale`` 0.5 replays twice as fast. ``rate`` (requests/s) instead picks
  the scale that makes the mean rate ``(n - 1) / last arrival`` equal to it (``inf``: all
  at 0). ``rid`` is the position in the selection.
* Laziness: only compact records (lengths and block ids) are kept; each iteration of the
  returned :class:`OpenLoop` builds every :class:`Request` and its token array on demand,
  so a long trace never holds all prompts at once. Iterating twice gives equal requests.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import IO, Any

import numpy as np

from kvroute.errors import ConfigError
from kvroute.workloads.request import OpenLoop, Request

__all__ = ["MooncakeRecord", "Trace", "block_tokens", "load_mooncake", "read_mooncake",
           "read_trace", "trace_name", "turn_tokens", "write_mooncake"]

_FIELDS = ("timestamp", "input_length", "output_length", "hash_ids")
_CHAT_KEYS = ("chat_id", "parent_chat_id")  # a Bailian trace: seconds, 16-token blocks
DEFAULT_BLOCK = {"mooncake": 512, "bailian": 16, "lengths": 512}


@dataclass(frozen=True)
class MooncakeRecord:
    timestamp: float  # ms
    input_length: int
    output_length: int
    hash_ids: np.ndarray = field(repr=False)  # 1-D int64 block ids
    line: int = 0  # 1-based line in the file it came from (0: not from a file)
    session: int = -1  # its conversation, in a Bailian trace (the module doc)
    turn: int = 0
    continued_by: int = 0  # the line of its continuation, in a Bailian trace (0: none)
    parent_line: int = 0  # the line of the request it follows, in a Bailian trace (0: none)


@dataclass(frozen=True)
class Trace:
    """A trace file's records (in file order), the block size their ids stand for, and
    its layout: ``mooncake``, ``bailian`` or ``lengths`` (a CSV of lengths only)."""
    records: list[MooncakeRecord]
    block_size: int
    layout: str

    def by_line(self) -> dict[int, MooncakeRecord]:
        """The records by line, where some have a continuation (else empty)."""
        if not any(r.continued_by for r in self.records):
            return {}
        return {r.line: r for r in self.records}


def turn_tokens(r: MooncakeRecord, cont: MooncakeRecord | None,
                block_size: int) -> tuple[np.ndarray, np.ndarray | None]:
    """A record's prompt and, given its continuation ``cont``, its output: the ids that
    follow its prompt in ``cont`` (the module doc); without one, its own prompt and
    None."""
    if cont is None:
        return block_tokens(r.hash_ids, r.input_length, block_size), None
    seq = block_tokens(cont.hash_ids, cont.input_length, block_size)
    n = r.input_length
    return seq[:n], seq[n:n + max(1, r.output_length)]


def block_tokens(hash_ids: np.ndarray, input_length: int, block_size: int = 512) -> np.ndarray:
    """The prompt of a record: block ``b``, position ``j`` -> ``b * block_size + j``."""
    ids = np.asarray(hash_ids, dtype=np.int64)
    return (ids[:, None] * block_size + np.arange(block_size, dtype=np.int64)).ravel()[
        :input_length]


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


_INT64_MAX = 2**63 - 1


def _open_text(path: str) -> IO[str]:
    """``path`` as text: gunzipped when it starts with gzip's magic bytes; a UTF-8
    byte-order mark is dropped."""
    with open(path, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    if gzipped:
        return gzip.open(path, "rt", encoding="utf-8-sig")
    return open(path, encoding="utf-8-sig")


def _parse(where: str, line: int, obj: Any, seconds: bool) -> MooncakeRecord:
    if not isinstance(obj, dict):
        raise ConfigError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    missing = [k for k in _FIELDS if k not in obj]
    if missing:
        raise ConfigError(f"{where}: missing {', '.join(missing)}")
    ts, n_in, n_out, blocks = (obj[k] for k in _FIELDS)
    if isinstance(ts, bool) or not isinstance(ts, int | float) or not math.isfinite(ts):
        unit = "s" if seconds else "ms"
        raise ConfigError(f"{where}: timestamp must be a number ({unit}), got {ts!r}")
    if not _is_int(n_in) or n_in < 1:
        raise ConfigError(f"{where}: input_length must be an integer >= 1, got {n_in!r}")
    if not _is_int(n_out) or n_out < 0:
        raise ConfigError(f"{where}: output_length must be an integer >= 0, got {n_out!r}")
    if not isinstance(blocks, list) or not all(_is_int(b) and 0 <= b <= _INT64_MAX
                                               for b in blocks):
        raise ConfigError(f"{where}: hash_ids must be a list of integers in [0, 2^63)")
    if not blocks:
        raise ConfigError(f"{where}: hash_ids is empty (input_length {n_in})")
    turn = obj.get("turn", 0) if seconds else 0
    return MooncakeRecord(float(ts) * 1000 if seconds else float(ts), n_in, n_out,
                          np.array(blocks, dtype=np.int64), line,
                          turn=turn if _is_int(turn) else 0)


def _fitting_sizes(records: list[MooncakeRecord]) -> tuple[int, int]:
    """The block sizes B every record fits, ``(len - 1) B < input_length <= len B``, as
    ``(lowest, highest)``; lowest > highest if there is none."""
    lo, hi = 1, _INT64_MAX
    for r in records:
        n, k = r.input_length, len(r.hash_ids)
        lo = max(lo, -(-n // k))
        if k > 1:
            hi = min(hi, (n - 1) // (k - 1))
    return lo, hi


def _check_blocks(path: str, records: list[MooncakeRecord], block_size: int,
                  given: bool) -> None:
    for r in records:
        k = len(r.hash_ids)
        if not (k - 1) * block_size < r.input_length <= k * block_size:
            lo, hi = _fitting_sizes(records)
            if lo > hi:
                hint = "no one block size fits every line of the file"
            elif lo == hi:
                hint = f"every line fits {lo}-token blocks: pass block size {lo}"
            else:
                hint = (f"every line fits blocks of {lo} to "
                        f"{hi if hi < _INT64_MAX else 'any number of'} tokens")
            origin = "given" if given else "this layout's default"
            raise ConfigError(f"{path}:{r.line}: input_length {r.input_length} does not fit "
                              f"{k} blocks of {block_size} tokens ({origin}; {hint})")


def _conversations(records: list[MooncakeRecord], chats: list[tuple[Any, Any]],
                   block_size: int) -> list[MooncakeRecord]:
    """Each record with its conversation (the root reached by ``parent_chat_id``; a parent
    missing from the file is a root; numbered in order of first arrival) and the line of
    its continuation: its first child, by time, whose prompt holds its whole blocks and
    is at least its prompt and output long (the module doc)."""
    root_of: dict[Any, Any] = {}
    index_of: dict[Any, int] = {}
    number: dict[Any, int] = {}
    out = list(records)
    for i in sorted(range(len(records)), key=lambda i: records[i].timestamp):
        chat, parent = chats[i]
        r = records[i]
        root = chat if parent in (-1, "-1") else root_of.get(parent, parent)
        root_of[chat] = root
        index_of.setdefault(chat, i)
        p = index_of.get(parent)
        out[i] = replace(r, session=number.setdefault(root, len(number)),
                         parent_line=0 if p is None else records[p].line)
        if p is not None and out[p].continued_by == 0:
            q = out[p]
            whole = q.input_length // block_size
            if r.input_length >= q.input_length + max(1, q.output_length) \
                    and np.array_equal(r.hash_ids[:whole], q.hash_ids[:whole]):
                out[p] = replace(q, continued_by=r.line)
    return out


def trace_name(path: str | os.PathLike[str]) -> str:
    """A trace's name: its file name without ``.gz`` and then its extension."""
    base = os.path.basename(os.fspath(path))
    return os.path.splitext(base[:-3] if base.endswith(".gz") else base)[0]


def read_trace(path: str | os.PathLike[str], block_size: int | None = None) -> Trace:
    """Parse and check every line of a Mooncake or Bailian trace (blank lines are
    skipped), or the rows of a CSV trace of lengths only
    (:mod:`~kvroute.workloads.length_traces`: Azure's or BurstGPT's columns; every
    prompt new content). ``block_size`` None: the layout's default (the module doc)."""
    if block_size is not None and (not _is_int(block_size) or block_size < 1):
        raise ConfigError(f"block_size must be an integer >= 1, got {block_size!r}")
    p = os.fspath(path)
    records: list[MooncakeRecord] = []
    chats: list[tuple[Any, Any]] = []
    layout = "mooncake"
    try:
        with _open_text(p) as f:
            first = next((t for t in f if t.strip()), "")
            f.seek(0)
            if first and not first.lstrip().startswith("{"):  # a CSV of lengths only
                from kvroute.workloads.length_traces import read_length_csv
                layout = "lengths"
                records = read_length_csv(f, p, block_size or DEFAULT_BLOCK[layout])
            else:
                for n, text in enumerate(f, 1):
                    if not text.strip():
                        continue
                    try:
                        obj = json.loads(text)
                    except json.JSONDecodeError as e:
                        raise ConfigError(f"{p}:{n}: bad JSON ({e.msg})") from e
                    if not records and isinstance(obj, dict) and any(
                            k in obj for k in _CHAT_KEYS):
                        layout = "bailian"
                    records.append(_parse(f"{p}:{n}", n, obj, layout == "bailian"))
                    if layout == "bailian":
                        chats.append((_chat_id(obj, "chat_id", f"{p}:{n}", f"line {n}"),
                                      _chat_id(obj, "parent_chat_id", f"{p}:{n}", -1)))
    except FileNotFoundError as e:
        raise ConfigError(f"{p}: trace file not found") from e
    except IsADirectoryError as e:
        raise ConfigError(f"{p}: is a directory, expected a Mooncake JSONL trace") from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not UTF-8 text ({e.reason})") from e
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:  # a truncated or damaged .gz
        raise ConfigError(f"{p}: damaged gzip file ({e})") from e
    except OSError as e:
        raise ConfigError(f"{p}: cannot read trace ({e.strerror})") from e
    if not records:
        raise ConfigError(f"{p}: empty trace")
    size = block_size or DEFAULT_BLOCK[layout]
    if layout != "lengths":
        _check_blocks(p, records, size, block_size is not None)
    if layout == "bailian":
        records = _conversations(records, chats, size)
    return Trace(records, size, layout)


def _chat_id(obj: dict[str, Any], key: str, where: str, default: Any) -> Any:
    """A chat id: an integer or a string (``default`` if absent or null)."""
    value = obj.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ConfigError(f"{where}: {key} must be an integer or a string, got {value!r}")
    return value


def read_mooncake(path: str | os.PathLike[str],
                  block_size: int | None = None) -> list[MooncakeRecord]:
    """The records of :func:`read_trace`."""
    return read_trace(path, block_size).records


def load_mooncake(path: str | os.PathLike[str], block_size: int | None = None, *,
                  time_scale: float = 1.0, rate: float | None = None, start: int = 0,
                  limit: int | None = None, start_time: float | None = None,
                  end_time: float | None = None, name: str | None = None) -> OpenLoop:
    """A Mooncake trace as an open-loop stream, with lazily built requests."""
    if not (time_scale > 0 and math.isfinite(time_scale)):
        raise ConfigError(f"time_scale must be a finite number > 0, got {time_scale}")
    if rate is not None and time_scale != 1.0:
        raise ConfigError("give rate or time_scale, not both")
    if rate is not None and not rate > 0:
        raise ConfigError(f"rate must be > 0 requests/s (or inf), got {rate}")
    if start < 0 or (limit is not None and limit < 1):
        raise ConfigError(f"start must be >= 0 and limit >= 1, got start={start}, "
                          f"limit={limit}")
    p = os.fspath(path)
    trace = read_trace(p, block_size)
    block_size = trace.block_size
    records = sorted(trace.records, key=lambda r: r.timestamp)
    if start_time is not None or end_time is not None:
        lo = -math.inf if start_time is None else start_time * 1000
        hi = math.inf if end_time is None else end_time * 1000
        records = [r for r in records if lo <= r.timestamp < hi]
    records = records[start:None if limit is None else start + limit]
    if not records:
        raise ConfigError(f"{p}: no request left after the window and slice "
                          f"(start_time={start_time}, end_time={end_time}, start={start}, "
                          f"limit={limit})")
    rel = np.array([r.timestamp for r in records]) - records[0].timestamp
    span = float(rel[-1]) / 1000
    rid_of = {r.line: rid for rid, r in enumerate(records)} if trace.layout == "bailian" else {}
    follows = [rid_of.get(r.parent_line, -1) if r.parent_line else -1 for r in records]
    follows = [a if a < rid else -1 for rid, a in enumerate(follows)]
    starts = rel[[rid for rid, a in enumerate(follows) if a < 0]]
    if len(starts) > 1 and starts[-1] > starts[0] and len(starts) < len(records):
        span = float(starts[-1] - starts[0]) / 1000  # the rate of the conversations' starts
    scale = time_scale
    if rate is not None:
        if math.isinf(rate):
            scale = 0.0
        elif len(records) > 1:
            if span <= 0:
                raise ConfigError(f"{p}: cannot scale to rate {rate}: the selected requests "
                                  f"all have the same timestamp")
            scale = (len(records) - 1) / (span * rate)
    arrivals = (rel / 1000 * scale).tolist()
    by_line = trace.by_line()

    def source() -> Iterator[Request]:
        for rid, (r, t, after) in enumerate(zip(records, arrivals, follows, strict=True)):
            tokens, out = turn_tokens(r, by_line.get(r.continued_by), block_size)
            pace = (r.timestamp - records[after].timestamp) / 1000 if after >= 0 else 0.0
            yield Request(rid, tokens, max(1, r.output_length), arrival=t, session=r.session,
                          turn=r.turn, output_tokens=out, after=after, pace=pace)

    meta = {"path": p, "layout": trace.layout, "block_size": block_size, "time_scale": scale,
            "prompt_tokens": sum(r.input_length for r in records),
            "duration_s": span * scale, "first_line": records[0].line}
    return OpenLoop(name or trace_name(p), source, len(records),
                    meta)


def write_mooncake(path: str | os.PathLike[str],
                   records: Iterable[MooncakeRecord | Mapping[str, Any]]) -> int:
    """Write records (:class:`MooncakeRecord` or dicts with the four keys) as a Mooncake
    JSONL trace; returns the number of lines written."""
    n = 0
    with open(os.fspath(path), "w", encoding="utf-8") as f:
        for r in records:
            if isinstance(r, MooncakeRecord):
                ts: float | int = r.timestamp
                obj: dict[str, Any] = {"input_length": r.input_length,
                                       "output_length": r.output_length,
                                       "hash_ids": [int(b) for b in r.hash_ids]}
            else:
                ts = r["timestamp"]
                obj = {"input_length": int(r["input_length"]),
                       "output_length": int(r["output_length"]),
                       "hash_ids": [int(b) for b in r["hash_ids"]]}
            if isinstance(ts, float) and ts.is_integer():
                ts = int(ts)
            f.write(json.dumps({"timestamp": ts, **obj}) + "\n")
            n += 1
    return n
