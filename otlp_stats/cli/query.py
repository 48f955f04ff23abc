"""`otlp-stats query`: the /v1/distinct answer (or /v1/patterns', with --patterns) on the command
line, read from the store itself."""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from collections.abc import Sequence

from otlp_stats.clock import SystemClock
from otlp_stats.config import ConfigError, Settings, load_settings
from otlp_stats.operating.pattern_query import (
    answer_patterns,
    parse_pattern_query,
    render_patterns_table,
)
from otlp_stats.operating.query import (
    QueryError,
    answer_query,
    parse_query,
    query_scope,
    render_table,
    stored_key_default,
)
from otlp_stats.store.base import StateStore
from otlp_stats.store.location import open_store
from otlp_stats.store.redis import StoreUnavailable
from otlp_stats.store.sqlite import StoreMissing

EXIT_OK = 0
EXIT_NOT_FOUND = 1
EXIT_BAD_QUERY = 2
EXIT_UNAVAILABLE = 3


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="otlp-stats query",
        description="Distinct messages per period and value, or with --patterns each value's "
        "top patterns over the periods, from the store (--store ...). "
        "Other service flags (--store, --rollups, --retention, --window, --attribute-key) "
        "apply as when serving.",
    )
    parser.add_argument(
        "--resolution",
        default="1d",
        metavar="{window,1m,1h,1d,1mo}",
        help="period of each row (default: 1d)",
    )
    parser.add_argument(
        "--from", dest="start", required=True, metavar="DATE", help="date or RFC 3339 time"
    )
    parser.add_argument("--to", dest="end", metavar="DATE", help="date or time (default: --from)")
    parser.add_argument(
        "--key",
        help="the attribute key whose values to show: one configured with --attribute-key or "
        "held by the store (default: the first --attribute-key, or the store's only key)",
    )
    parser.add_argument("--value", help="one attribute value only")
    parser.add_argument(
        "--patterns",
        action="store_true",
        help="each value's patterns over all the periods asked for: how many, and the top ones "
        "with their records and an example",
    )
    parser.add_argument(
        "--top",
        metavar="N|all",
        help="with --patterns: how many patterns of each value to list (default: 3; 0: none)",
    )
    parser.add_argument("--json", action="store_true", help="print the JSON answer")
    return parser


def main(argv: Sequence[str]) -> int:
    args, service_flags = _build_parser().parse_known_args(list(argv))
    try:
        settings = load_settings(service_flags)
    except ConfigError as error:
        print(f"otlp-stats query: invalid configuration: {error}", file=sys.stderr)
        return EXIT_BAD_QUERY
    if settings.store == "memory":
        print(
            "otlp-stats query: name the store to read: --store sqlite:///path.db or "
            "--store redis://host:port/db",
            file=sys.stderr,
        )
        return EXIT_BAD_QUERY
    params = {"resolution": args.resolution, "from": args.start}
    if args.end:
        params["to"] = args.end
    if args.value:
        params["value"] = args.value
    if args.key:
        params["key"] = args.key
    if args.top is not None:
        if not args.patterns:
            print("otlp-stats query: --top goes with --patterns", file=sys.stderr)
            return EXIT_BAD_QUERY
        params["top"] = args.top
    try:
        # Read-only: a mistyped path must not leave an empty database (and its directory).
        store = open_store(settings, read_only=True)
    except StoreMissing as error:
        print(f"otlp-stats query: {error}", file=sys.stderr)
        return EXIT_NOT_FOUND
    try:
        return _answer(store, settings, params, args.json, args.patterns)
    except QueryError as error:
        print(f"otlp-stats query: {error}", file=sys.stderr)
        return EXIT_NOT_FOUND if error.status == 404 else EXIT_BAD_QUERY
    except (StoreUnavailable, sqlite3.Error) as error:
        # Redis down, or its TLS certificate not trusted; an SQLite file failing mid-read (a
        # disk error, or a database that is not a store of ours): one line, never a traceback.
        # The error names host and port only, so the URL's password stays out of it.
        print(f"otlp-stats query: the store cannot be read: {error}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    finally:
        store.close()


def _answer(
    store: StateStore, settings: Settings, params: dict[str, str], as_json: bool, patterns: bool
) -> int:
    """The command line may run without the service's settings: it answers for the configured
    keys and for every key the store holds; the first configured one is the default unless
    the store holds only other keys (stored_key_default)."""
    held = store.attribute_keys()
    scope = query_scope(settings, held)
    if "key" not in params:
        params = {**params, "key": stored_key_default(settings.attribute_keys, held)}
    now = SystemClock().now()
    if patterns:
        answer = answer_patterns(store, parse_pattern_query(params, scope, now), scope, now)
        table = render_patterns_table
    else:
        answer = answer_query(store, parse_query(params, scope, now), scope, now)
        table = render_table
    sys.stdout.write(json.dumps(answer, indent=2) + "\n" if as_json else table(answer))
    return EXIT_OK
