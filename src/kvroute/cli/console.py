"""Shared pieces of the command line: rich (an extra) and the progress bar."""

from __future__ import annotations

from typing import Any

from kvroute.errors import KvrouteError

__all__ = ["make_console", "need_rich", "progress_bar"]


def need_rich() -> Any:
    try:
        import rich.console
        import rich.progress
        import rich.table
    except ImportError:
        raise KvrouteError(
            "kvroute's command line needs rich: pip install 'kvroute[cli]'") from None
    return rich


def progress_bar(console: Any) -> Any:
    rich = need_rich()
    return rich.progress.Progress(
        rich.progress.TextColumn("{task.description:>22}"), rich.progress.BarColumn(),
        rich.progress.MofNCompleteColumn(), rich.progress.TimeElapsedColumn(),
        console=console, transient=True)


def make_console() -> Any:
    """A console; when output is not a terminal, wide enough for kvroute's tables."""
    rich = need_rich()
    console = rich.console.Console()
    return console if console.is_terminal else rich.console.Console(width=160)
