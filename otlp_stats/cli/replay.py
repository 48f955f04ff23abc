"""`otlp-stats replay`: history from files or stdin, counted as the service counts, in event time.

Exit status: 0 replayed (malformed frames skipped and said), 1 an input or the store failed, or
`--strict` met a malformed frame, 2 a bad command line, 3 an input already replayed into the
store (`--force` replays it anyway).
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import uuid
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import replace
from datetime import UTC, datetime
from typing import BinaryIO, TextIO

import redis
import structlog
from prometheus_client import CollectorRegistry

from otlp_stats.clock import SystemClock
from otlp_stats.config import ConfigError, Settings, add_setting_arguments, load_settings
from otlp_stats.counting.keyed import aggregator_for
from otlp_stats.counting.late import RejectLate
from otlp_stats.counting.queue import RequestQueue
from otlp_stats.counting.resolve import LabelRenderer
from otlp_stats.replaying.frames import TIME_UNITS, FrameFields
from otlp_stats.replaying.framing import BrokenStream
from otlp_stats.replaying.inputs import (
    InputError,
    ReplayInput,
    expand_inputs,
    open_decompressed,
    spooled_stdin,
)
from otlp_stats.replaying.progress import Progress
from otlp_stats.replaying.replayer import Replayer, StopReplay
from otlp_stats.reporting.reporter import Reporter, patterns_shown
from otlp_stats.reporting.sinks.base import ReportSinks
from otlp_stats.reporting.sinks.build import open_sinks
from otlp_stats.store.base import StateStore
from otlp_stats.store.ledger import LedgerEntry, ReplayLedger, open_ledger
from otlp_stats.store.location import open_reviser, open_store
from otlp_stats.telemetry import Metrics, configure_logging

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_USAGE = 2
EXIT_ALREADY_REPLAYED = 3

# The service's settings that mean something to a replay: counting, reports and the store.
REPLAY_SETTINGS = (
    *("attribute_key", "window", "allowed_lateness", "missing_label", "max_values"),
    *("max_value_length", "sketch_lg_k", "max_recv_size", "report_format", "store", "rollups"),
    *("report_top", "retention", "log_format", "log_level", "report_sink", "sink_queue_size"),
    *("count_patterns", "top_patterns", "max_patterns", "max_pattern_tokens"),
    *("max_pattern_length", "pattern_rules", "report_patterns"),
)
# How long the sinks may take to deliver the last reports once the replay is done.
SINK_GRACE = 15.0
_STORE_ERRORS = (OSError, sqlite3.Error, redis.RedisError)
# Errors reading an input: its file, or its compression.
_READ_ERRORS = (OSError, EOFError, BrokenStream)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="otlp-stats replay",
        description="Count history: files the Collector's file exporter wrote (format json or "
        "proto; gzip, zstd or plain, told from the bytes), or JSON lines of any shape with "
        "--input-format jsonl, from files, globs or stdin (- or nothing), in event time: the "
        "same windows, reports and store as `otlp-stats serve`.",
        epilog="Exit status: 0 replayed, 1 failed, 2 bad usage, 3 already replayed into the "
        "store (--force to replay anyway). Every setting flag can also be set as "
        "OTLP_STATS_<NAME> in the environment or .env.",
    )
    parser.add_argument("paths", nargs="*", metavar="PATH", help="files or globs; - is stdin")
    replay = parser.add_argument_group("replay")
    replay.add_argument(
        "--input-format",
        choices=("otlp", "jsonl"),
        default="otlp",
        help="otlp: the file exporter's json or proto files (default); jsonl: JSON frames",
    )
    replay.add_argument("--time-field", default="ts", help="jsonl: the time's dotted path")
    replay.add_argument("--value-field", help="jsonl: the counted value's dotted path")
    replay.add_argument("--message-field", help="jsonl: the message's dotted path")
    replay.add_argument(
        "--time-unit",
        choices=TIME_UNITS,
        default="auto",
        help="jsonl: unit of numeric times (default: auto, from their magnitude)",
    )
    replay.add_argument(
        "--strict", action="store_true", help="stop at the first malformed line (exit 1)"
    )
    replay.add_argument(
        "--force", action="store_true", help="replay inputs the store's ledger already holds"
    )
    add_setting_arguments(parser, only=REPLAY_SETTINGS)
    return parser


def main(argv: Sequence[str], stdin: BinaryIO | None = None, out: TextIO | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(list(argv))
    stdin = stdin if stdin is not None else sys.stdin.buffer
    out = out if out is not None else sys.stdout
    try:
        settings = _settings(args)
    except ConfigError as error:
        return _fail(f"invalid configuration: {error}", EXIT_BAD_USAGE)
    configure_logging(settings.log_format, settings.log_level)
    try:
        inputs = expand_inputs(args.paths)
    except InputError as error:
        return _fail(str(error), EXIT_FAILED)
    with ExitStack() as stack:
        if settings.store != "memory" and any(i.path is None for i in inputs):
            # The ledger needs stdin's digest before any of it is counted.
            spooled = stack.enter_context(spooled_stdin(stdin))
            inputs = [spooled if i.path is None else i for i in inputs]
        return _replay(args, settings, inputs, stdin, out, stack)
    return EXIT_FAILED  # unreachable: ExitStack does not swallow exceptions


def _setting_flags(args: argparse.Namespace) -> list[str]:
    """The setting flags given, as load_settings reads them beside the environment."""
    flags = ["--env-file", args.env_file]
    for name in REPLAY_SETTINGS:
        value = getattr(args, name)
        # A repeatable flag (--report-sink) is a list of its values.
        for one in value if isinstance(value, list) else [] if value is None else [value]:
            flags += ["--" + name.replace("_", "-"), one]
    return flags


def _settings(args: argparse.Namespace) -> Settings:
    defaults: dict[str, object] = {}
    if args.input_format == "jsonl":
        if not args.value_field or not args.message_field:
            raise ConfigError("--input-format jsonl needs --value-field and --message-field")
        # The report names what was counted: the value field, unless --attribute-key says.
        defaults["attribute_keys"] = (args.value_field,)
    settings_parser = argparse.ArgumentParser(prog="otlp-stats replay", add_help=False)
    add_setting_arguments(settings_parser, only=REPLAY_SETTINGS)
    settings = load_settings(_setting_flags(args), parser=settings_parser, defaults=defaults)
    if args.input_format == "jsonl" and len(settings.attribute_keys) > 1:
        # A JSON line's one --value-field is what is counted: there is no second key to read.
        raise ConfigError(
            "--input-format jsonl counts one --value-field: give one --attribute-key "
            f"(not {len(settings.attribute_keys)})"
        )
    # Replay is event time whatever the environment says: there is no arrival to go by.
    return replace(settings, window_time="event")


def _replay(
    args: argparse.Namespace,
    settings: Settings,
    inputs: list[ReplayInput],
    stdin: BinaryIO,
    out: TextIO,
    stack: ExitStack,
) -> int:
    log = structlog.get_logger("otlp_stats")
    try:
        store = open_store(settings) if settings.store != "memory" else None
        ledger = open_ledger(settings.store)
    except _STORE_ERRORS as error:
        return _fail(f"cannot open the store: {error}", EXIT_FAILED)
    if store is not None:
        stack.callback(store.close)
    if ledger is not None:
        stack.callback(ledger.close)
    clock = SystemClock()
    entries: list[LedgerEntry] = []
    if ledger is not None:
        entries = [LedgerEntry(i.sha256(), i.name, i.size) for i in inputs]
        refusal = _already_replayed(ledger, entries, settings.store)
        if refusal and not args.force:
            return _fail(refusal, EXIT_ALREADY_REPLAYED)
        ledger.start(entries, clock.now())
    # Its own idempotency keys: a replayed window's report must not be taken by a receiver
    # for the live service's report of the same window and revision, and dropped as a repeat.
    run = f"replay-{uuid.uuid4().hex[:12]}"
    sinks = open_sinks(settings.report_sink, log, settings.sink_queue_size, replica=run)
    sinks.start()
    # Also on the way out of a failed replay: what was reported still reaches the sinks.
    stack.callback(sinks.close, SINK_GRACE)
    replayer = _build_replayer(args, settings, store, out, clock, log, sinks)
    progress = Progress(sum(i.size for i in inputs), sys.stderr)
    try:
        for source in inputs:
            with open_decompressed(source, stdin) as (stream, counted):
                progress.begin(counted)
                replayer.replay(source.name, stream, lambda: progress.update(replayer.counts))
        counts = replayer.finish()
    except StopReplay as error:
        progress.close()
        return _fail(f"{error} (--strict: stopped)", EXIT_FAILED)
    except _READ_ERRORS as error:
        progress.close()
        return _fail(f"{source.name}: cannot read on: {error}", EXIT_FAILED)
    except _STORE_ERRORS as error:
        progress.close()
        return _fail(f"store write failed: {error}", EXIT_FAILED)
    progress.close()
    if replayer.unmerged_windows:
        print(
            f"otlp-stats replay: late records of {replayer.unmerged_windows} windows not merged: "
            "the replicas of a live service had yet to merge those windows",
            file=sys.stderr,
        )
    if ledger is not None:
        ledger.finish([entry.sha256 for entry in entries], counts.records, clock.now())
    print(counts.summary(len(inputs)), file=sys.stderr)
    return EXIT_OK


def _build_replayer(
    args: argparse.Namespace,
    settings: Settings,
    store: StateStore | None,
    out: TextIO,
    clock: SystemClock,
    log: object,
    sinks: ReportSinks,
) -> Replayer:
    aggregator = aggregator_for(
        settings.attribute_keys,
        settings.window,
        # Any start: the first windows open as the data reaches them.
        0.0,
        settings.max_values,
        settings.sketch_lg_k,
        keep_sketches=store is not None,
        lateness=settings.allowed_lateness,
        max_patterns=settings.max_patterns,
        top_patterns=settings.top_patterns,
    )
    reporter = Reporter(
        aggregator,
        RequestQueue(1, 1),
        clock,
        out,
        Metrics(CollectorRegistry()),
        settings.attribute_key,
        settings.missing_label,
        settings.report_format,
        logger=log,
        window_time="event",
        sinks=sinks,
        report_top=settings.report_top,
        patterns=patterns_shown(
            settings.count_patterns, settings.top_patterns, settings.report_patterns
        ),
    )
    # Late records: merged into their stored windows with a store that keeps them, as live.
    # Revisions are not spaced out by the clock: replay's merges come in batches already.
    reviser = (
        open_reviser(settings, store, reporter, spacing=0.0, acknowledges=False)
        if store is not None
        else None
    )
    fields = (
        FrameFields(args.time_field, args.value_field, args.message_field, args.time_unit)
        if args.input_format == "jsonl"
        else None
    )
    return Replayer(
        aggregator,
        reporter,
        # The live service's seam for late records: what it does with them, replay does.
        reviser.late
        if reviser is not None
        else RejectLate(settings.window, settings.allowed_lateness),
        clock,
        settings.attribute_keys,
        LabelRenderer(settings.max_value_length),
        settings.max_recv_size,
        fields,
        store,
        on_malformed=lambda message: print(f"otlp-stats replay: {message}", file=sys.stderr),
        strict=args.strict,
        masker=settings.masker(),
        reviser=reviser,
    )


def _already_replayed(ledger: ReplayLedger, entries: list[LedgerEntry], store: str) -> str:
    """Why the inputs must not be replayed into this store, or "" if nothing stands in the way."""
    seen: dict[str, str] = {}
    for entry in entries:
        if entry.sha256 in seen:
            return (
                f"{entry.name} has the same bytes as {seen[entry.sha256]}: its records would "
                "count twice"
            )
        seen[entry.sha256] = entry.name
    known = ledger.known([entry.sha256 for entry in entries])
    if not known:
        return ""
    first = known[0]
    name = next(e.name for e in entries if e.sha256 == first.sha256)
    when = datetime.fromtimestamp(first.started, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    state = (
        f"finished, {first.records} records"
        if first.finished is not None
        else "interrupted before it finished, so some of its windows may be stored"
    )
    return (
        f"{name} was already replayed into {store} (as {first.name}, {when}, {state}; "
        f"sha256 {first.sha256[:16]}...): replaying it again would count its records twice "
        f"in every stored period; --force replays it anyway"
        + (f" ({len(known) - 1} more inputs are in the ledger too)" if len(known) > 1 else "")
    )


def _fail(message: str, status: int) -> int:
    print(f"otlp-stats replay: {message}", file=sys.stderr)
    return status
