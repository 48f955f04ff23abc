"""`otlp-stats query`: the /v1/distinct answer on the command line, read from the store itself."""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from collections.abc import Sequence

from otlp_stats.clock import SystemClock
from otlp_stats.config import ConfigError, Settings, load_settings
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
        description="Distinct messages per period and value, from the store (--store ...). "
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
    try:
        # Read-only: a mistyped path must not leave an empty database (and its directory).
        store = open_store(settings, read_only=True)
    except StoreMissing as error:
        print(f"otlp-stats query: {error}", file=sys.stderr)
        return EXIT_NOT_FOUND
    try:
        return _answer(store, settings, params, args.json)
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


def _answer(store: StateStore, settings: Settings, params: dict[str, str], as_json: bool) -> int:
    """The command line may run without the service's settings: it answers for the configured
    keys and for every key the store holds; the first configured one is the default unless
    the store holds only other keys (stored_key_default)."""
    held = store.attribute_keys()
    scope = query_scope(settings, held)
    if "key" not in params:
        params = {**params, "key": stored_key_default(settings.attribute_keys, held)}
    now = SystemClock().now()
    query = parse_query(params, scope, now)
    answer = answer_query(store, query, scope, now)
    sys.stdout.write(json.dumps(answer, indent=2) + "\n" if as_json else render_table(answer))
    return EXIT_OK
