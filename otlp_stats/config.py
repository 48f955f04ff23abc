"""The one typed Settings object, built once at start from flags, environment and `.env`.

Precedence: command-line flag > `OTLP_STATS_<NAME>` environment variable > `.env` file in the
working directory > default. Only this module reads the environment.
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

from dotenv import dotenv_values

from otlp_stats.patterns.masker import (
    DEFAULT_MAX_LENGTH,
    DEFAULT_MAX_TOKENS,
    MASK,
    Masker,
    PatternRule,
)
from otlp_stats.patterns.rules import PatternRulesError, load_rules
from otlp_stats.patterns.tally import DEFAULT_MAX_PATTERNS, DEFAULT_TOP_PATTERNS
from otlp_stats.processes.cores import available_cores
from otlp_stats.reporting.sinks.uri import (
    check_redis_tls_files,
    for_log,
    parse_sink_uri,
    redact,
    split_sink_list,
)
from otlp_stats.store.periods import DEFAULT_RETENTION, Retention, parse_retention, parse_rollups

ENV_PREFIX = "OTLP_STATS_"
MiB = 1024 * 1024

ReportFormat = Literal["text", "json"]
LogFormat = Literal["console", "json"]
LogLevel = Literal["debug", "info", "warning", "error"]
# Which clock assigns a record to its window: when its request arrived, or its own timestamp.
WindowTime = Literal["arrival", "event"]
Durability = Literal["auto", "ack", "checkpoint"]
DURABILITIES = ("auto", "ack", "checkpoint")
Synchronous = Literal["full", "normal"]
SYNCHRONOUS_MODES = ("full", "normal")


class ConfigError(ValueError):
    """A setting has a value the service cannot run with; the message names the setting."""


@dataclass(frozen=True)
class ListenAddress:
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class PatternRules:
    """A --pattern-rules file and its rules, read and checked once when settings are loaded."""

    path: Path
    rules: tuple[PatternRule, ...]

    def __str__(self) -> str:
        return str(self.path)


@dataclass(frozen=True)
class Settings:
    # The attribute keys counted, each on its own (--attribute-key, repeatable); the first is
    # the default key of queries. Several are resolved in one pass over each request.
    attribute_keys: tuple[str, ...] = ("service.name",)
    window: float = 10.0
    window_time: WindowTime = "arrival"
    # Event time only: how long after its end a window waits for disordered records, and how
    # far ahead of its arrival a record's time may be before it is taken for a broken clock.
    allowed_lateness: float = 5.0
    max_clock_skew: float = 300.0
    report_format: ReportFormat = "text"
    # Values a report lists before one line for the rest: None is the format's own default
    # (50 for text, every value for JSON, so JSON stays as it was), 0 is every value.
    report_top: int | None = None
    # Where reports go (docs/sinks.md): stdout, file://, http(s)://, redis-stream://, otlp+...
    report_sink: tuple[str, ...] = ("stdout",)
    sink_queue_size: int = 1000
    grpc_listen: ListenAddress = ListenAddress("0.0.0.0", 4317)
    http_listen: ListenAddress = ListenAddress("0.0.0.0", 4318)
    admin_listen: ListenAddress = ListenAddress("0.0.0.0", 9464)
    grpc_health: bool = True
    grpc_reflection: bool = True
    workers: int = 2
    # Serving processes on the same ports, merged into one report (docs/scaling.md);
    # "auto" is parsed to the cores this process may use.
    processes: int = 1
    # The asyncio event loop the service runs on: auto is uvloop where it can be imported.
    event_loop: str = "auto"
    queue_size: int = 512
    queue_max_bytes: int = 64 * MiB
    max_recv_size: int = 64 * MiB
    # Work and memory per request follow its records, not its bytes: a record can be 2 bytes.
    max_records_per_request: int = 500_000
    log_format: LogFormat = "console"
    log_level: LogLevel = "info"
    missing_label: str = "unknown"
    metrics_top_values: int = 100
    max_values: int = 10_000
    max_value_length: int = 1024
    sketch_lg_k: int = 12
    # Message patterns (docs/patterns.md): counted per value, or not at all (no masking cost,
    # no pattern memory, reports as before patterns existed).
    count_patterns: bool = True
    # Top patterns a report names per value (0: only their number), and patterns tracked per
    # value and window (the rest's records in one overflow pattern).
    top_patterns: int = DEFAULT_TOP_PATTERNS
    max_patterns: int = DEFAULT_MAX_PATTERNS
    # The masker's own bounds, and a team's masks applied before the built-in ones.
    max_pattern_tokens: int = DEFAULT_MAX_TOKENS
    max_pattern_length: int = DEFAULT_MAX_LENGTH
    pattern_rules: PatternRules | None = None
    # The text report lists each value's top patterns under it (JSON always carries them).
    report_patterns: bool = False
    retry_delay: float = 1.0
    shutdown_grace: float = 15.0
    # Transport security and authentication (docs/security.md).
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = None
    admin_tls: bool = False
    auth_token_file: Path | None = None
    admin_auth: bool = False
    # Slow and stuck clients (docs/reliability.md).
    grpc_keepalive_time: float = 60.0
    grpc_keepalive_timeout: float = 20.0
    grpc_max_connection_idle: float = 300.0
    grpc_max_concurrent_streams: int = 100
    http_read_timeout: float = 30.0
    http_idle_timeout: float = 75.0
    # Durable and shared counting state (docs/storage.md).
    store: str = "memory"
    checkpoint_interval: float = 5.0
    # When an Export is answered: once its counts are durable (ack) or once counted in
    # memory (checkpoint); auto is ack with a store that keeps them (docs/storage.md).
    durability: Durability = "auto"
    commit_interval: float = 0.01
    commit_max_requests: int = 256
    sqlite_synchronous: Synchronous = "normal"
    rollups: tuple[str, ...] = ("1d", "1mo")
    retention: Retention = DEFAULT_RETENTION
    merge_grace: float = 2.0
    claim_timeout: float = 30.0
    replica_id: str = ""

    @property
    def acks_durably(self) -> bool:
        """--durability ack in effect: explicitly, or by default with SQLite or Redis in one
        process (several processes leave the store to their supervisor)."""
        if self.durability != "auto":
            return self.durability == "ack"
        return self.store.startswith(_DURABLE_STORES) and self.processes == 1

    @property
    def attribute_key(self) -> str:
        """The first key counted: the only one until several are counted in one pass."""
        return self.attribute_keys[0]

    def masker(self) -> Masker | None:
        """The masker every scanner shares (stateless, so one is enough), or None when
        patterns are not counted."""
        if not self.count_patterns:
            return None
        rules = () if self.pattern_rules is None else self.pattern_rules.rules
        return Masker(rules, self.max_pattern_tokens, self.max_pattern_length)


@dataclass(frozen=True)
class _Option:
    """How one setting is spelled on the command line and parsed from text."""

    name: str
    parse: Callable[[str], Any]
    help: str
    choices: tuple[str, ...] | None = None
    # Given more than once on the command line; a comma list in the environment and .env.
    repeatable: bool = False


_KEY_PATTERN = re.compile(r"^[^\s\x00-\x1f\x7f]{1,255}$")


def _parse_key(text: str) -> str:
    if not _KEY_PATTERN.match(text):
        raise ValueError("must be 1-255 printable characters without whitespace")
    return text


MAX_ATTRIBUTE_KEYS = 16


def _parse_keys(text: str) -> tuple[str, ...]:
    """A comma list of attribute keys (a repeated flag arrives joined by commas): each key
    counted on its own, so a key named twice or more than MAX_ATTRIBUTE_KEYS is a mistake."""
    keys = tuple(_parse_key(key) for key in text.split(","))
    if len(keys) > MAX_ATTRIBUTE_KEYS:
        raise ValueError(f"at most {MAX_ATTRIBUTE_KEYS} keys, not {len(keys)}")
    twice = sorted({key for key in keys if keys.count(key) > 1})
    if twice:
        raise ValueError(f"a key given twice: {', '.join(twice)}")
    return keys


def _parse_positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise ValueError("must be a positive number")
    return value


def _parse_non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0 or value == float("inf"):
        raise ValueError("must be zero or a positive number")
    return value


def _parse_lg_k(text: str) -> int:
    value = int(text, 10)
    if not 4 <= value <= 21:
        raise ValueError("must be between 4 and 21 (k = 16 .. 2097152)")
    return value


def _parse_processes(text: str) -> int:
    """A count, or "auto": the cores available (CPU affinity, cgroup quota)."""
    if text.strip().lower() == "auto":
        return available_cores()
    return _parse_positive_int(text)


def _parse_report_top(text: str) -> int | None:
    """A count of values, "all" (0) or "auto" (None: the report format decides)."""
    word = text.strip().lower()
    if word == "auto":
        return None
    if word == "all":
        return 0
    value = int(word, 10)
    if value < 0:
        raise ValueError("must be a count of values, all or auto")
    return value


def _parse_positive_int(text: str) -> int:
    value = int(text, 10)
    if value < 1:
        raise ValueError("must be a positive integer")
    return value


def _parse_count(text: str) -> int:
    value = int(text, 10)
    if value < 0:
        raise ValueError("must be zero or a positive integer")
    return value


def _parse_pattern_length(text: str) -> int:
    value = int(text, 10)
    if value < len(MASK):
        raise ValueError(f"must be at least {len(MASK)} bytes (one {MASK})")
    return value


def _parse_pattern_rules(text: str) -> PatternRules | None:
    """The rule file read and every rule compiled now, so a bad one stops the start."""
    if not text.strip():
        return None
    path = Path(text.strip())
    try:
        rules = load_rules(path)
    except PatternRulesError as error:
        # The error names the file first; the flag's own message names it already.
        raise ValueError(str(error).removeprefix(f"{path}: ")) from None
    return PatternRules(path, tuple(rules))


_SIZE_SUFFIXES = {"": 1, "b": 1, "kib": 1024, "k": 1024, "mib": MiB, "m": MiB, "gib": 1024 * MiB}


def _parse_size(text: str) -> int:
    """Bytes, with an optional KiB/MiB/GiB suffix ("64MiB", "1048576")."""
    match = re.fullmatch(r"\s*(\d+)\s*([a-zA-Z]*)\s*", text)
    if not match or match.group(2).lower() not in _SIZE_SUFFIXES:
        raise ValueError("must be a byte count such as 67108864 or 64MiB")
    value = int(match.group(1)) * _SIZE_SUFFIXES[match.group(2).lower()]
    if value < 1:
        raise ValueError("must be at least 1 byte")
    return value


def parse_listen_address(text: str) -> ListenAddress:
    """Parse `host:port` or `[v6-host]:port`; port 0 asks the OS for a free port."""
    match = re.fullmatch(r"\[([0-9a-fA-F:.]+)\]:(\d{1,5})|([^\s:\[\]]+):(\d{1,5})", text.strip())
    if not match:
        raise ValueError("must be host:port, for example 0.0.0.0:4317 or [::]:4317")
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    if port > 65535:
        raise ValueError("port must be between 0 and 65535")
    return ListenAddress(host, port)


def _parse_choice(choices: tuple[str, ...]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        lowered = text.strip().lower()
        if lowered not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return lowered

    return parse


EVENT_LOOPS = ("auto", "uvloop", "asyncio")

_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError("must be true or false")


def _parse_label(text: str) -> str:
    if not text or len(text) > 255:
        raise ValueError("must be 1-255 characters")
    return text


def _parse_optional_path(text: str) -> Path | None:
    # An empty value (`OTLP_STATS_TLS_CERT_FILE=` in .env) means "not set".
    return Path(text.strip()) if text.strip() else None


def _parse_store(text: str) -> str:
    text = text.strip()
    if text == "memory" or text.startswith("redis://"):
        return text
    if text.startswith("rediss://"):
        check_redis_tls_files(text)
        return text
    if text.startswith("sqlite:///") and len(text) > len("sqlite:///"):
        return text
    raise ValueError(
        "must be memory, sqlite:///path/to/file.db, redis://host:port/db or rediss://host:port/db"
    )


def _parse_rollups(text: str) -> tuple[str, ...]:
    return parse_rollups(text)


def _parse_retention(text: str) -> Retention:
    return parse_retention(text)


def _parse_report_sinks(text: str) -> tuple[str, ...]:
    """A comma list of sink URIs, each checked now (its files read) so a bad one stops the start."""
    uris = split_sink_list(text)
    seen: set[str] = set()
    for uri in uris:
        parse_sink_uri(uri)
        # One sink per destination: its outbox rows are keyed by the URI without the password.
        identity = redact(uri)
        if identity in seen:
            raise ValueError(f"{for_log(uri)} is named twice (passwords aside)")
        seen.add(identity)
    return uris


def _parse_replica_id(text: str) -> str:
    if text and not _KEY_PATTERN.match(text):
        raise ValueError("must be 1-255 printable characters without whitespace")
    return text


_OPTIONS: tuple[_Option, ...] = (
    _Option(
        "attribute_key",
        _parse_keys,
        "attribute key to count by (repeatable, one for now)",
        repeatable=True,
    ),
    _Option("window", _parse_positive_float, "window length"),
    _Option(
        "window_time",
        _parse_choice(("arrival", "event")),
        "window records by their request's arrival or by their own timestamps",
        ("arrival", "event"),
    ),
    _Option(
        "allowed_lateness",
        _parse_non_negative_float,
        "event time: a window is reported this long after its end",
    ),
    _Option(
        "max_clock_skew",
        _parse_non_negative_float,
        "event time: records dated further ahead of arrival count at arrival",
    ),
    _Option(
        "report_format", _parse_choice(("text", "json")), "stdout report format", ("text", "json")
    ),
    _Option(
        "report_top",
        _parse_report_top,
        "values a report lists, the rest in one line: a count, all (or 0), "
        "or auto (50 for text, all for JSON)",
    ),
    _Option(
        "report_sink",
        _parse_report_sinks,
        "where reports go, repeatable: stdout, file:///x.jsonl, https://..., "
        "redis-stream://... (rediss-stream:// over TLS), otlp+grpc://..., otlp+http://...",
        repeatable=True,
    ),
    _Option(
        "sink_queue_size", _parse_positive_int, "reports queued per sink before the oldest drop"
    ),
    _Option("grpc_listen", parse_listen_address, "OTLP/gRPC listen address"),
    _Option("http_listen", parse_listen_address, "OTLP/HTTP listen address"),
    _Option("admin_listen", parse_listen_address, "/metrics and health listen address"),
    _Option("grpc_health", _parse_bool, "serve grpc.health.v1 on the gRPC port"),
    _Option("grpc_reflection", _parse_bool, "serve gRPC server reflection"),
    _Option("workers", _parse_positive_int, "worker tasks resolving requests"),
    _Option("processes", _parse_processes, "serving processes on the same ports, or auto"),
    _Option(
        "event_loop",
        _parse_choice(EVENT_LOOPS),
        "asyncio event loop: auto (uvloop if installed), uvloop, asyncio",
        EVENT_LOOPS,
    ),
    _Option("queue_size", _parse_positive_int, "most requests queued or in work"),
    _Option("queue_max_bytes", _parse_size, "most bytes held by requests queued or in work"),
    _Option("max_recv_size", _parse_size, "largest accepted request, after decompression"),
    _Option(
        "max_records_per_request", _parse_positive_int, "most log records in one accepted request"
    ),
    _Option(
        "log_format", _parse_choice(("console", "json")), "stderr log format", ("console", "json")
    ),
    _Option(
        "log_level",
        _parse_choice(("debug", "info", "warning", "error")),
        "stderr log level",
        ("debug", "info", "warning", "error"),
    ),
    _Option("missing_label", _parse_label, "label of records without the attribute"),
    _Option("metrics_top_values", _parse_positive_int, "values exported per-value in /metrics"),
    _Option("max_values", _parse_positive_int, "attribute values tracked per window"),
    _Option("max_value_length", _parse_positive_int, "longest value label in characters"),
    _Option("sketch_lg_k", _parse_lg_k, "log2 of the sketch's k (exact below k messages)"),
    _Option("count_patterns", _parse_bool, "count message patterns per value (docs/patterns.md)"),
    _Option("top_patterns", _parse_count, "top patterns a report names per value (0: none)"),
    _Option("max_patterns", _parse_positive_int, "patterns tracked per value and window"),
    _Option("max_pattern_tokens", _parse_positive_int, "tokens of a message masked, the rest <*>"),
    _Option("max_pattern_length", _parse_pattern_length, "longest pattern in UTF-8 bytes"),
    _Option(
        "pattern_rules",
        _parse_pattern_rules,
        "TOML file of extra masks ([rules] name = 'regex'), applied first",
    ),
    _Option("report_patterns", _parse_bool, "text report: top patterns under each value"),
    _Option("retry_delay", _parse_non_negative_float, "retry delay told to throttled senders"),
    _Option("shutdown_grace", _parse_positive_float, "longest drain on shutdown"),
    _Option("tls_cert_file", _parse_optional_path, "PEM certificate chain: TLS on gRPC and HTTP"),
    _Option("tls_key_file", _parse_optional_path, "PEM private key of --tls-cert-file"),
    _Option("tls_client_ca_file", _parse_optional_path, "PEM CA bundle: require client certs"),
    _Option("admin_tls", _parse_bool, "serve the admin port with the TLS certificate too"),
    _Option("auth_token_file", _parse_optional_path, "accepted bearer tokens, one a line"),
    _Option("admin_auth", _parse_bool, "require the token on the admin port but its probes"),
    _Option("grpc_keepalive_time", _parse_positive_float, "gRPC keepalive ping interval"),
    _Option("grpc_keepalive_timeout", _parse_positive_float, "gRPC keepalive ping timeout"),
    _Option(
        "grpc_max_connection_idle", _parse_positive_float, "close gRPC connections idle this long"
    ),
    _Option("grpc_max_concurrent_streams", _parse_positive_int, "gRPC streams per connection"),
    _Option("http_read_timeout", _parse_positive_float, "longest read of one HTTP body"),
    _Option("http_idle_timeout", _parse_positive_float, "close HTTP keep-alives idle this long"),
    _Option(
        "store",
        _parse_store,
        "state store: memory, sqlite:///path.db, redis://host:port/db, rediss:// (TLS)",
    ),
    _Option("checkpoint_interval", _parse_positive_float, "open-window checkpoint period"),
    _Option(
        "durability",
        _parse_choice(DURABILITIES),
        "answer an Export once its counts are in the store (ack) or in memory (checkpoint); "
        "auto: ack with sqlite or redis",
        DURABILITIES,
    ),
    _Option("commit_interval", _parse_positive_float, "ack: longest wait to group commits"),
    _Option("commit_max_requests", _parse_positive_int, "ack: commit as soon as this many wait"),
    _Option(
        "sqlite_synchronous",
        _parse_choice(SYNCHRONOUS_MODES),
        "ack: normal survives a process kill, full also power loss (an fsync per group)",
        SYNCHRONOUS_MODES,
    ),
    _Option("rollups", _parse_rollups, "calendar rollups kept: 1m, 1h, 1d, 1mo (comma list)"),
    _Option("retention", _parse_retention, "kept per resolution: window=1h,1d=60d,1mo=24mo"),
    _Option("merge_grace", _parse_non_negative_float, "wait for replicas' flushes (redis)"),
    _Option("claim_timeout", _parse_positive_float, "a window claim expires after (redis)"),
    _Option("replica_id", _parse_replica_id, "this replica's name in reports (default hostname)"),
)


def setting_names() -> list[str]:
    """Every setting's name, in the order `.env.example` and the README list them."""
    return [option.name for option in _OPTIONS]


def default_settings() -> Settings:
    return Settings()


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


# The command line lists the settings by stage, in the pipeline's order (--help).
SETTING_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "receiving",
        (
            "grpc_listen",
            "http_listen",
            "grpc_reflection",
            "max_recv_size",
            "max_records_per_request",
            "retry_delay",
            "grpc_keepalive_time",
            "grpc_keepalive_timeout",
            "grpc_max_connection_idle",
            "grpc_max_concurrent_streams",
            "http_read_timeout",
            "http_idle_timeout",
        ),
    ),
    (
        "counting",
        (
            "attribute_key",
            "window",
            "window_time",
            "allowed_lateness",
            "max_clock_skew",
            "workers",
            "processes",
            "event_loop",
            "queue_size",
            "queue_max_bytes",
            "missing_label",
            "max_values",
            "max_value_length",
            "sketch_lg_k",
            "count_patterns",
            "max_patterns",
            "max_pattern_tokens",
            "max_pattern_length",
            "pattern_rules",
        ),
    ),
    (
        "reporting",
        (
            "report_format",
            "report_top",
            "top_patterns",
            "report_patterns",
            "report_sink",
            "sink_queue_size",
        ),
    ),
    (
        "storage",
        (
            "store",
            "checkpoint_interval",
            "durability",
            "commit_interval",
            "commit_max_requests",
            "sqlite_synchronous",
            "rollups",
            "retention",
            "merge_grace",
            "claim_timeout",
            "replica_id",
        ),
    ),
    (
        "security",
        (
            "tls_cert_file",
            "tls_key_file",
            "tls_client_ca_file",
            "admin_tls",
            "auth_token_file",
            "admin_auth",
        ),
    ),
    (
        "operations",
        (
            "admin_listen",
            "grpc_health",
            "metrics_top_values",
            "log_format",
            "log_level",
            "shutdown_grace",
        ),
    ),
)

# What a value looks like on the command line, by how it is parsed.
_METAVARS: Mapping[Callable[[str], Any], str] = {
    parse_listen_address: "HOST:PORT",
    _parse_size: "SIZE",
    _parse_positive_float: "SECONDS",
    _parse_non_negative_float: "SECONDS",
    _parse_positive_int: "N",
    _parse_count: "N",
    _parse_pattern_length: "BYTES",
    _parse_pattern_rules: "FILE",
    _parse_processes: "{N,auto}",
    _parse_lg_k: "N",
    _parse_bool: "{true,false}",
    _parse_optional_path: "FILE",
    _parse_key: "KEY",
    _parse_keys: "KEY",
    _parse_label: "LABEL",
    _parse_store: "URL",
    _parse_rollups: "LIST",
    _parse_retention: "SPEC",
    _parse_replica_id: "NAME",
    _parse_report_sinks: "URI",
}


def _metavar(option: _Option) -> str:
    if option.choices:
        return "{" + ",".join(option.choices) + "}"
    return _METAVARS.get(option.parse, option.name.upper())


def format_size(value: int) -> str:
    """A byte count as a user would type it: 67108864 -> 64MiB."""
    for unit, size in (("GiB", 1024 * MiB), ("MiB", MiB), ("KiB", 1024)):
        if value % size == 0:
            return f"{value // size}{unit}"
    return str(value)


def _shown_default(option: _Option, value: object) -> str:
    """The default as it would be typed on the command line."""
    if option.parse is _parse_size and isinstance(value, int):
        return format_size(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return "unset" if value is None else str(value)


def add_setting_arguments(
    parser: argparse.ArgumentParser, only: Sequence[str] | None = None
) -> None:
    """Every setting's flag (or those `only` names), one argument group per stage, and
    --env-file. A setting left off the command line still comes from the environment."""
    by_name = {option.name: option for option in _OPTIONS}
    defaults = Settings()
    for title, names in SETTING_GROUPS:
        names = tuple(name for name in names if only is None or name in only)
        if not names:
            continue
        group = parser.add_argument_group(title)
        for name in names:
            option = by_name[name]
            default = getattr(defaults, name)
            shown = f" (default: {_shown_default(option, default)})" if default != "" else ""
            group.add_argument(
                _flag(name),
                dest=name,
                default=None,
                metavar=_metavar(option),
                help=option.help + shown,
                action="append" if option.repeatable else "store",
            )
    parser.add_argument(
        "--env-file",
        default=".env",
        metavar="FILE",
        help="dotenv file read for settings (default: .env)",
    )


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="otlp-stats",
        description="Count distinct log messages per attribute value in tumbling windows.",
        epilog=f"Every flag can also be set as {ENV_PREFIX}<NAME> in the environment or .env.",
    )
    add_setting_arguments(parser)
    return parser


def load_settings(
    argv: Sequence[str],
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    parser: argparse.ArgumentParser | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> Settings:
    """Build Settings from flags, environment and `.env`; raise ConfigError on a bad value.

    argparse's own usage errors (unknown flag) exit with status 2, as bad values do. `parser`
    is one the command line built with add_setting_arguments (to add --version and its help).
    `defaults` replace Settings' own defaults (a command's, such as replay's attribute key).
    """
    environ = os.environ if environ is None else environ
    args = (parser or _build_parser()).parse_args(list(argv))
    env_file = Path(args.env_file)
    if not env_file.is_absolute():
        env_file = (cwd or Path.cwd()) / env_file
    dotenv = {k: v for k, v in dotenv_values(env_file).items() if v is not None}

    values: dict[str, Any] = dict(defaults or {})
    for option in _OPTIONS:
        env_name = ENV_PREFIX + option.name.upper()
        for source, raw in (
            (_flag(option.name), getattr(args, option.name, None)),
            (env_name, environ.get(env_name)),
            (f"{env_name} in {env_file.name}", dotenv.get(env_name)),
        ):
            if raw is None:
                continue
            if isinstance(raw, list):  # a repeatable flag, given once or more
                raw = ",".join(raw)
            try:
                values[_FIELDS.get(option.name, option.name)] = option.parse(raw)
            except ValueError as error:
                raise ConfigError(f"{source}={_shown(option.name, raw)!r}: {error}") from None
            break
    _reject_unknown_env(dotenv, env_file.name)
    settings = Settings(**values)
    _validate_together(settings)
    _validate_processes(settings)
    _validate_security(settings)
    _validate_durability(settings)
    return settings


# A setting kept in a Settings field of another name: the flag stays singular, as typed.
_FIELDS = {"attribute_key": "attribute_keys"}


def _reject_unknown_env(dotenv: Mapping[str, str], source: str) -> None:
    """A misspelt setting in .env would otherwise be ignored without a word."""
    known = {ENV_PREFIX + name.upper() for name in setting_names()}
    unknown = sorted(k for k in dotenv if k.startswith(ENV_PREFIX) and k not in known)
    if unknown:
        raise ConfigError(f"unknown setting(s) in {source}: {', '.join(unknown)}")


_LISTEN_SETTINGS = ("grpc_listen", "http_listen", "admin_listen")


def _validate_together(settings: Settings) -> None:
    listens = [(name, getattr(settings, name)) for name in _LISTEN_SETTINGS]
    for (first, address), (second, other) in itertools.combinations(listens, 2):
        # Port 0 asks the OS for a free port, so equal port-0 addresses never collide.
        if address == other and address.port != 0:
            raise ConfigError(f"{first} and {second} must differ")


def describe(settings: Settings) -> dict[str, object]:
    """Settings as plain values, for the start-up log line."""
    described: dict[str, object] = {
        f.name: str(getattr(settings, f.name)) for f in fields(settings)
    }
    # redis://user:password@host/0: a log line is no place for the password.
    described["store"] = _without_passwords(settings.store)
    described["report_sink"] = ",".join(for_log(uri) for uri in settings.report_sink)
    described["attribute_keys"] = ",".join(settings.attribute_keys)
    return described


def _shown(name: str, raw: str) -> str:
    """A setting's raw value fit for an error message: no password, no webhook token."""
    if name == "report_sink" and raw.strip(" ,"):
        return ",".join(for_log(uri) for uri in split_sink_list(raw))
    return _without_passwords(raw)


def _without_passwords(text: str) -> str:
    """URLs' `user:password@` shown as `user:***@`, for log lines and error messages."""
    return re.sub(r"//([^:/@]*):[^@/]*@", r"//\1:***@", text)


def _validate_processes(settings: Settings) -> None:
    """Late records under event time are merged by the store's reviser, which lives with the
    aggregator that counted them; with several processes that is not built (docs/scaling.md)."""
    if settings.processes > 1 and settings.window_time == "event" and settings.store != "memory":
        raise ConfigError(
            "processes > 1 with window_time=event needs store=memory: late records are "
            "merged into stored windows by one process only"
        )


_DURABLE_STORES = ("sqlite://", "redis://", "rediss://")


def _validate_durability(settings: Settings) -> None:
    """Acknowledging once durable needs a store this process writes, SQLite or Redis, in one
    process."""
    if settings.durability != "ack":
        return
    if not settings.store.startswith(_DURABLE_STORES):
        raise ConfigError(
            "durability=ack needs store=sqlite:///... or redis://...: the memory store keeps "
            "nothing"
        )
    if settings.processes > 1:
        raise ConfigError("durability=ack needs processes=1: several processes share no journal")


def _validate_security(settings: Settings) -> None:
    """TLS needs a certificate and its key; client CAs, admin TLS and admin auth need their base."""
    if (settings.tls_cert_file is None) != (settings.tls_key_file is None):
        raise ConfigError("tls_cert_file and tls_key_file must be set together")
    if settings.tls_cert_file is None and settings.tls_client_ca_file is not None:
        raise ConfigError("tls_client_ca_file needs tls_cert_file and tls_key_file")
    if settings.tls_cert_file is None and settings.admin_tls:
        raise ConfigError("admin_tls needs tls_cert_file and tls_key_file")
    if settings.auth_token_file is None and settings.admin_auth:
        raise ConfigError("admin_auth needs auth_token_file")
    for name in ("tls_cert_file", "tls_key_file", "tls_client_ca_file", "auth_token_file"):
        path: Path | None = getattr(settings, name)
        if path is not None and not path.is_file():
            raise ConfigError(f"{name}={str(path)!r}: no such file")
