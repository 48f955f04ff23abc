"""`otlp-stats`: one command line for every command; serving is the default one."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from otlp_stats import __version__
from otlp_stats.cli import pattern, query, replay, serve
from otlp_stats.config import ENV_PREFIX, add_setting_arguments

# Each command's name and what it does, as --help lists them.
COMMANDS = (
    ("serve", "receive OTLP logs, count them per window, print each window's report (default)"),
    ("query", "distinct messages (or --patterns) per period and value, from the store (--store)"),
    ("replay", "count history from files or stdin in event time, into the same store"),
    ("pattern", "print each log line's pattern (variable parts masked), or --summary counts"),
)


def build_parser() -> argparse.ArgumentParser:
    """The top-level command line: the commands, --version, and the serving flags by stage."""
    listing = "\n".join(f"  {name:<8}{summary}" for name, summary in COMMANDS)
    parser = argparse.ArgumentParser(
        prog="otlp-stats",
        usage="%(prog)s [serve] [options]\n       %(prog)s query --from DATE [options]\n"
        "       %(prog)s replay [PATH ...] [options]\n"
        "       %(prog)s pattern [PATH ...] [--summary] [options]",
        description="Count distinct log messages per attribute value in tumbling windows.\n\n"
        f"commands:\n{listing}",
        epilog=f"Every flag can also be set as {ENV_PREFIX}<NAME> in the environment or .env. "
        "`otlp-stats query --help`, `otlp-stats replay --help` and `otlp-stats pattern --help` "
        "list their own flags.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    add_setting_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command argv names (`query`, `replay`, `pattern`, `serve`), or serve when it
    names none."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["query"]:
        return query.main(args[1:])
    if args[:1] == ["replay"]:
        return replay.main(args[1:])
    if args[:1] == ["pattern"]:
        return pattern.main(args[1:])
    if args[:1] == ["serve"]:
        args = args[1:]
    return serve.main(args, build_parser())
