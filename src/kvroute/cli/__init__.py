"""The ``kvroute`` command line: thin; it parses, builds objects from registries, calls them.

Each subcommand lives in its own module with an ``add_parser(subparsers)`` function.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from kvroute import __version__
from kvroute.cli import bench as bench
from kvroute.cli import cache as cache
from kvroute.cli import compare as compare
from kvroute.cli import serve as serve
from kvroute.cli import sim as sim
from kvroute.cli import up as up
from kvroute.cli import worker as worker
from kvroute.cli.console import CommandParser
from kvroute.errors import KvrouteError
from kvroute.plugins import add_plugin, load_plugins

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="kvroute", description=(
        "Joint request routing and prefix-KV-cache eviction for multi-replica LLM serving."))
    ap.add_argument("--version", action="version", version=f"kvroute {__version__}")
    ap.add_argument("--plugin", action="append", metavar="FILE.py|MODULE", help=(
        "import policies from this file or module (repeatable; also the KVROUTE_PLUGINS "
        "environment variable and the 'kvroute.plugins' entry points): docs/architecture.md"))
    sub = ap.add_subparsers(dest="command", required=True,
                            parser_class=CommandParser)
    for module in (sim, compare, up, serve, worker, bench, cache):
        module.add_parser(sub)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    try:
        # before the parser is built (its help lists the registries' names, plugins' too);
        # taken out wherever it stands, before or after the command
        pre = argparse.ArgumentParser(prog="kvroute", add_help=False, allow_abbrev=False)
        pre.add_argument("--plugin", action="append", default=[], metavar="FILE.py|MODULE")
        known, rest = pre.parse_known_args(argv)
        for spec in known.plugin:
            add_plugin(spec)
        load_plugins()
        args = build_parser().parse_args(rest)
        return int(args.func(args))
    except KvrouteError as exc:
        print(f"kvroute: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("kvroute: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
