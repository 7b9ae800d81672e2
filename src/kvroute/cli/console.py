"""Shared pieces of the command line: rich, the progress bar, the help formatter."""

from __future__ import annotations

import argparse
from typing import Any

from kvroute.errors import KvrouteError

__all__ = ["CommandParser", "HelpFormatter", "make_console", "need_matplotlib", "need_rich",
           "progress_bar"]


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


def progress_bar(console: Any) -> Any:
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
    """A subcommand's parser: :class:`HelpFormatter` unless told otherwise."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)
