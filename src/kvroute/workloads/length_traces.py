"""Request traces that carry only lengths (no prompt content), read as Mooncake records.

Two public CSV layouts, told apart by their header (extra columns are ignored):

* Azure's LLM inference traces (2023, 2024): ``TIMESTAMP,ContextTokens,GeneratedTokens``,
  the time as an ISO date and time (``2023-11-16 18:15:46.6805900``);
* BurstGPT: ``Timestamp,Model,Request tokens,Response tokens,...``, the time in seconds.
  Its failed requests (``Response tokens`` 0) are kept, with no output; it mixes models,
  so a user who wants one model filters the rows first.

Contract of :func:`read_length_csv`: every row becomes a
:class:`~kvroute.workloads.mooncake.MooncakeRecord` whose ``timestamp`` is in ms after the
file's first row (Azure) or the trace's own seconds times 1000 (BurstGPT), and whose
prompt is *new content*: ``ceil(input / block_size)`` block ids never used by another
row (consecutive from 0), so no two requests share a prefix, as nothing says they do.
A row is rejected (:class:`ConfigError` naming ``path:line``) unless its prompt length is
an integer >= 1, its output length an integer >= 0 and its time readable and finite.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable
from datetime import datetime

import numpy as np

from kvroute.errors import ConfigError
from kvroute.workloads.mooncake import MooncakeRecord

__all__ = ["LAYOUTS", "read_length_csv"]

# layout name -> (time column, prompt column, output column)
LAYOUTS = {"azure": ("TIMESTAMP", "ContextTokens", "GeneratedTokens"),
           "burstgpt": ("Timestamp", "Request tokens", "Response tokens")}


def _layout(header: list[str]) -> str | None:
    names = {h.strip() for h in header}
    for layout, columns in LAYOUTS.items():
        if all(c in names for c in columns):
            return layout
    return None


def _count(where: str, what: str, text: str, low: int) -> int:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value == int(value) and value >= low):
        raise ConfigError(f"{where}: {what} must be an integer >= {low}, got {text!r}")
    return int(value)


def read_length_csv(lines: Iterable[str], path: str,
                    block_size: int = 512) -> list[MooncakeRecord]:
    """The rows of a length-only CSV (``lines``: the file's text lines, header first)."""
    reader = csv.reader(lines)
    header = next(reader, None)
    layout = None if header is None else _layout(header)
    if header is None or layout is None:
        expected = "; ".join(",".join(c) for c in LAYOUTS.values())
        raise ConfigError(f"{path}: not a Mooncake JSONL trace, nor a CSV with the columns "
                          f"{expected}")
    names = [h.strip() for h in header]
    t_col, in_col, out_col = (names.index(c) for c in LAYOUTS[layout])
    records: list[MooncakeRecord] = []
    t0: datetime | None = None
    next_id = 0
    for row in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        where = f"{path}:{line}"
        if len(row) <= max(t_col, in_col, out_col):
            raise ConfigError(f"{where}: expected {len(header)} columns, got {len(row)}")
        n_in = _count(where, LAYOUTS[layout][1], row[in_col], 1)
        n_out = _count(where, LAYOUTS[layout][2], row[out_col], 0)
        stamp = row[t_col].strip()
        try:
            if layout == "azure":
                when = datetime.fromisoformat(stamp)
                t0 = when if t0 is None else t0
                ts = (when - t0).total_seconds() * 1000
            else:
                ts = float(stamp) * 1000
        except (ValueError, TypeError) as e:
            raise ConfigError(f"{where}: cannot read the time {stamp!r}") from e
        if not math.isfinite(ts):
            raise ConfigError(f"{where}: cannot read the time {stamp!r}")
        blocks = -(-n_in // block_size)
        records.append(MooncakeRecord(ts, n_in, n_out,
                                      np.arange(next_id, next_id + blocks, dtype=np.int64),
                                      line))
        next_id += blocks
    return records
