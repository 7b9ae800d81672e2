"""Shared pieces of the command line: rich, the progress bar, the help formatter."""

from __future__ import annotations

import argparse
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kvroute.errors import ConfigError, KvrouteError

__all__ = ["CommandParser", "HelpFormatter", "LineProgress", "check_output", "make_console",
           "need_matplotlib", "need_rich", "progress_bar"]


def need_rich() -> Any:
    """rich (a core dependency: this fails only in a broken install)."""
    try:
        import rich.console
        import rich.progress
        import rich.table
    except ImportError:
        raise KvrouteError("kvroute's command line needs rich: pip install rich") from None
    return rich


def need_matplotlib(flag: str) -> None:
    """Fail before any work when ``flag`` asks for a plot and matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise KvrouteError(f"{flag} needs matplotlib: pip install 'kvroute[plot]'") from None


def check_output(path: str | None, flag: str, *, kind: str = "file") -> None:
    """Before any work: ``path`` (given to ``flag``) can be written, as a ``file``, a
    ``figure`` (a file whose suffix matplotlib can write; call :func:`need_matplotlib`
    first) or a ``directory``. Missing parent folders are created; the results of a long
    run must not be lost to a typo in where they go."""
    if path is None:
        return
    if not path.strip():
        raise ConfigError(f"{flag}: an empty path; give a "
                          f"{'directory' if kind == 'directory' else 'file name'}")
    target = Path(path)
    if kind == "directory":
        if target.exists() and not target.is_dir():
            raise ConfigError(f"{flag}: {path} exists and is not a directory")
        folder = target
    else:
        if target.is_dir():
            raise ConfigError(f"{flag}: {path} is a directory; give a file name")
        folder = target.parent
    if kind == "figure" and target.suffix:
        from matplotlib.figure import Figure

        formats = Figure().canvas.get_supported_filetypes()
        if target.suffix[1:].lower() not in formats:
            raise ConfigError(f"{flag}: matplotlib cannot write {target.suffix} files; use "
                              f"one of {', '.join('.' + f for f in sorted(formats))}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{flag}: cannot create {folder}: {exc.strerror}") from None
    if not os.access(folder, os.W_OK):
        raise ConfigError(f"{flag}: {folder} is not writable")


def progress_bar(console: Any, every_s: float = 5.0) -> Any:
    """A progress bar in a terminal; elsewhere (piped, a log, ``kvroute up --bench``'s
    child) a plain line per task every ``every_s`` seconds, so long work is never silent."""
    if not console.is_terminal:
        return LineProgress(console, every_s)
    rich = need_rich()
    return rich.progress.Progress(
        rich.progress.TextColumn("{task.description:>22}"), rich.progress.BarColumn(),
        rich.progress.MofNCompleteColumn(), rich.progress.TimeElapsedColumn(),
        console=console, transient=True)


def make_console() -> Any:
    """A console on stdout; when it is not a terminal, lines are not wrapped (and tables
    print as Markdown: :mod:`kvroute.cli.tables`)."""
    rich = need_rich()
    console = rich.console.Console()
    return console if console.is_terminal else rich.console.Console(soft_wrap=True)


class HelpFormatter(argparse.HelpFormatter):
    """States an option's default once: not for switches or options without one (None),
    and not when the option's help already says what its default is."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (not action.option_strings or default is None or default is argparse.SUPPRESS
                or isinstance(default, bool) or default == [] or "default" in text):
            return text
        return f"{text} (default: %(default)s)" if text else "default: %(default)s"


class CommandParser(argparse.ArgumentParser):
    """A subcommand's parser: :class:`HelpFormatter` unless told otherwise.

    A value that starts with a minus and a digit (``--capacity -5%``, ``--loads
    -0.5,0.8``) is read as the option's value, so that its own check says what is wrong
    with it: argparse takes only plain negative numbers so, and read ``-5%`` as an
    unknown option ("expected one argument"). No option of kvroute is spelt that way."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = re.compile(r"^-\.?\d")


class LineProgress:
    """The subset of rich's ``Progress`` the commands use, printing plain lines."""

    def __init__(self, console: Any, every_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.console = console
        self.every_s = every_s
        self.clock = clock
        self.tasks: list[dict[str, Any]] = []

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def add_task(self, description: str, total: float | None = None) -> int:
        now = self.clock()
        self.tasks.append({"description": description, "total": total, "completed": 0.0,
                           "start": now, "printed": now})
        return len(self.tasks) - 1

    def remove_task(self, task: int) -> None:
        self.tasks[task]["printed"] = float("inf")  # done: no more lines for it

    def update(self, task: int, *, completed: float | None = None, advance: float = 0.0,
               description: str | None = None) -> None:
        t = self.tasks[task]
        t["completed"] = (completed if completed is not None else t["completed"]) + advance
        if description is not None:
            t["description"] = description
        now = self.clock()
        if now - t["printed"] >= self.every_s:
            t["printed"] = now
            total = f"/{t['total']:,.0f}" if t["total"] else ""
            self.console.print(f"{t['description']}: {t['completed']:,.0f}{total} after "
                               f"{now - t['start']:.0f} s", markup=False, highlight=False)
