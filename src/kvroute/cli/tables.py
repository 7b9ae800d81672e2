"""Result tables that read at any width: the command lines print every table through here.

Contract:

* A table is a title, :class:`Column` s and rows of already formatted cells (``key ->
  text``). Columns that name a row (``names=True``: policy, workload ...) are never cut
  nor dropped; no cell is ever cut.
* In a terminal, the columns are shown in their order while they fit the console's
  width; those that do not are left out, and a line says which (``--columns`` picks
  others). Headers are short; a legend below the table says what each shown header means,
  with its unit.
* Anywhere else (piped, redirected), the table is plain Markdown with every chosen
  column, whatever the width: what a script or a document wants.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kvroute.errors import ConfigError

__all__ = ["Column", "choose_columns", "print_table"]

_PAD = 2  # rich's default padding: one space on each side of a cell


@dataclass(frozen=True)
class Column:
    key: str  # what --columns names
    header: str  # short
    meaning: str = ""  # for the legend, with the unit
    names: bool = False  # identifies the row: always shown, never cut
    right: bool = True  # numbers align right


def choose_columns(columns: Sequence[Column], text: str | None,
                   default: Sequence[str] | None = None) -> list[Column]:
    """The columns ``--columns a,b,c`` asks for (name columns always included, in the
    table's order); without it, ``default`` (None: all)."""
    by_key = {c.key: c for c in columns}
    wanted = ([k.strip() for k in text.split(",") if k.strip()] if text
              else list(default) if default is not None else list(by_key))
    bad = [k for k in wanted if k not in by_key]
    if bad:
        raise ConfigError(f"unknown column {', '.join(bad)}; choose from: "
                          f"{', '.join(by_key)}")
    return [c for c in columns if c.names or c.key in wanted]


def print_table(console: Any, title: str, columns: Sequence[Column],
                rows: Sequence[Mapping[str, str]]) -> None:
    """Print the table on ``console`` (see the module doc)."""
    if not console.is_terminal:
        console.print(_markdown(title, columns, rows), markup=False, highlight=False,
                      soft_wrap=True)
        return
    shown, hidden = _fit(columns, rows, console.width)
    from rich import box
    from rich.table import Table

    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, title_justify="left")
    for c in shown:
        table.add_column(c.header, justify="right" if c.right else "left", no_wrap=True)
    for row in rows:
        table.add_row(*(row.get(c.key, "") for c in shown))
    console.print(table)
    legend = [f"{c.header}: {c.meaning}" for c in shown if c.meaning and c.meaning != c.header]
    if legend:
        console.print("; ".join(legend), markup=False, highlight=False, style="dim")
    if hidden:
        console.print(f"not shown at this width: {', '.join(c.key for c in hidden)} "
                      "(--columns chooses; piped output has them all)", markup=False,
                      highlight=False, style="dim")


def _width(c: Column, rows: Sequence[Mapping[str, str]]) -> int:
    return max([len(c.header), *(len(r.get(c.key, "")) for r in rows)]) + _PAD


def _fit(columns: Sequence[Column], rows: Sequence[Mapping[str, str]],
         width: int) -> tuple[list[Column], list[Column]]:
    """Name columns, then the others in order while the table fits ``width``."""
    used = sum(_width(c, rows) for c in columns if c.names)
    keep: set[str] = {c.key for c in columns if c.names}
    hidden = []
    for c in columns:
        if c.names:
            continue
        w = _width(c, rows)
        if used + w <= width:
            keep.add(c.key)
            used += w
        else:
            hidden.append(c)
    return [c for c in columns if c.key in keep], hidden


def _markdown(title: str, columns: Sequence[Column], rows: Sequence[Mapping[str, str]]) -> str:
    lines = [title, ""] if title else []
    lines.append("| " + " | ".join(c.header for c in columns) + " |")
    lines.append("|" + "|".join("---:" if c.right else "---" for c in columns) + "|")
    lines += ["| " + " | ".join(r.get(c.key, "") for c in columns) + " |" for r in rows]
    legend = [f"{c.header}: {c.meaning}" for c in columns if c.meaning and c.meaning != c.header]
    if legend:
        lines += ["", "; ".join(legend)]
    return "\n".join(lines)
