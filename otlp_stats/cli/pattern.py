"""`otlp-stats pattern`: each log line's final pattern, or the patterns with their counts.

"Final" is after the masker and after the similarity merge over the whole input, so the whole
input is read before anything is printed. Exit status: 0 done, 1 an input could not be read,
2 a bad command line or a bad --pattern-rules file.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO, TextIO

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from otlp_stats.config import Settings
from otlp_stats.errors import MalformedRequest
from otlp_stats.patterns.masker import DEFAULT_MAX_LENGTH, DEFAULT_MAX_TOKENS, Masker
from otlp_stats.patterns.merge import DEFAULT_SIMILARITY, merge_patterns
from otlp_stats.patterns.rules import PatternRulesError, load_rules
from otlp_stats.patterns.structured import value_pattern
from otlp_stats.receiving.otlp_json import json_to_wire
from otlp_stats.replaying.framing import BrokenStream, line_batches, otlp_frames, unwrap_message
from otlp_stats.replaying.inputs import InputError, expand_inputs, open_decompressed

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_USAGE = 2
_READ_ERRORS = (OSError, EOFError, BrokenStream)


class _Malformed(Exception):
    """An OTLP input that does not decode; the message says where."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="otlp-stats pattern",
        description="Print each log line's pattern (its variable parts masked as <*>, then "
        "patterns that differ in a few words merged over the whole input), one per line; or "
        "with --summary, the patterns with their counts, most frequent first. Input: text "
        "lines, or with --input-format otlp the Collector file exporter's json or proto files "
        "(one pattern per record), from files, globs or stdin (- or nothing); gzip and zstd "
        "are told from the bytes.",
        epilog="Exit status: 0 done, 1 an input could not be read, 2 bad usage or a bad "
        "--pattern-rules file.",
    )
    parser.add_argument("paths", nargs="*", metavar="PATH", help="files or globs; - is stdin")
    parser.add_argument(
        "--input-format",
        choices=("lines", "otlp"),
        default="lines",
        help="lines: one message per line (default); otlp: file exporter files, one per record",
    )
    parser.add_argument(
        "--summary", action="store_true", help="print 'COUNT<TAB>PATTERN' per pattern instead"
    )
    parser.add_argument(
        "--pattern-rules",
        type=Path,
        metavar="FILE",
        help="TOML file of extra masks ([rules] name = 'regex'), applied before the built-in "
        "ones (docs/patterns.md)",
    )
    parser.add_argument(
        "--max-pattern-tokens",
        type=_positive,
        default=DEFAULT_MAX_TOKENS,
        help=f"tokens read per message; the rest are one <*> (default {DEFAULT_MAX_TOKENS})",
    )
    parser.add_argument(
        "--max-pattern-length",
        type=_positive,
        default=DEFAULT_MAX_LENGTH,
        help=f"bytes per pattern (UTF-8), cut at a token (default {DEFAULT_MAX_LENGTH})",
    )
    return parser


def _positive(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if number < 3:
        raise argparse.ArgumentTypeError(f"must be at least 3: {number}")
    return number


def main(argv: Sequence[str], stdin: BinaryIO | None = None, out: TextIO | None = None) -> int:
    args = build_parser().parse_args(list(argv))
    stdin = stdin if stdin is not None else sys.stdin.buffer
    out = out if out is not None else sys.stdout
    try:
        rules = load_rules(args.pattern_rules) if args.pattern_rules else []
    except PatternRulesError as error:
        return _fail(f"--pattern-rules {error}", EXIT_BAD_USAGE)
    masker = Masker(rules, args.max_pattern_tokens, args.max_pattern_length)
    try:
        inputs = expand_inputs(args.paths)
    except InputError as error:
        return _fail(str(error), EXIT_FAILED)
    masked: list[str] = []
    try:
        for source in inputs:
            with open_decompressed(source, stdin) as (stream, _):
                reader = _otlp_patterns if args.input_format == "otlp" else _line_patterns
                masked.extend(reader(stream, masker, source.name))
    except _READ_ERRORS as error:
        return _fail(f"{source.name}: cannot read on: {error}", EXIT_FAILED)
    except _Malformed as error:
        return _fail(str(error), EXIT_FAILED)
    final = merge_patterns(masked, DEFAULT_SIMILARITY)
    if args.summary:
        _print_summary(Counter(final[p] for p in masked), out)
    else:
        out.writelines(final[p] + "\n" for p in masked)
    return EXIT_OK


def _line_patterns(stream: BinaryIO, masker: Masker, name: str) -> Iterator[str]:
    """One pattern per line; bytes that are not UTF-8 are read as U+FFFD."""
    del name
    for _, lines in line_batches(stream):
        for line in lines:
            yield masker.mask(line.decode("utf-8", "replace").rstrip("\r\n"))


def _otlp_patterns(stream: BinaryIO, masker: Masker, name: str) -> Iterator[str]:
    """One pattern per log record of each request, in the order they are in the file."""
    limit = Settings().max_recv_size
    for frame in otlp_frames(stream, limit):
        try:
            wire = unwrap_message(frame.payload, limit)
            if wire[:1] == b"{":
                wire = json_to_wire(wire)
            request = ExportLogsServiceRequest.FromString(wire)
        except (MalformedRequest, DecodeError) as error:
            raise _Malformed(f"{frame.where(name)}: not an OTLP logs request: {error}") from None
        for resource_logs in request.resource_logs:
            for scope_logs in resource_logs.scope_logs:
                for record in scope_logs.log_records:
                    yield value_pattern(record.body, masker)


def _print_summary(counts: Counter[str], out: TextIO) -> None:
    # Ties in the pattern's order: the same input prints the same summary.
    for pattern, count in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        out.write(f"{count}\t{pattern}\n")


def _fail(message: str, status: int) -> int:
    print(f"otlp-stats pattern: {message}", file=sys.stderr)
    return status
