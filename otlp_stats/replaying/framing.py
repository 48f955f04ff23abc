"""The frames of a decompressed input: lines of JSON, or the file exporter's length-prefixed
messages.

The Collector's file exporter (exporter/fileexporter, file_writer.go) writes `format: json`
as one OTLP/JSON ExportLogsServiceRequest per line, and `format: proto` as each serialized
request preceded by its length in 4 bytes, big-endian. With `compression: zstd` (unless its
native-compression gate is on, which compresses the whole stream instead) it compresses each
message on its own and length-prefixes that, JSON included. So: a stream whose first byte is
`{` is lines (a length prefix starting with that byte would announce 2 GB), anything else is
length-prefixed, and a message starting with zstd's magic number is inflated first.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from otlp_stats.errors import MalformedRequest, RequestTooLarge
from otlp_stats.receiving.compression import inflate
from otlp_stats.replaying.inputs import ZSTD_MAGIC

_BLOCK = 1 << 20
_LENGTH = struct.Struct(">I")
_BLANK = b" \t\r\n"


class BrokenStream(Exception):
    """The input cannot be read on: a truncated or oversized frame, corrupt compression."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One request or line, and where it is: a line number, or a message number and offset."""

    payload: bytes
    number: int
    offset: int = -1

    def where(self, name: str) -> str:
        if self.offset < 0:
            return f"{name}:{self.number}"
        return f"{name}: message {self.number} (byte {self.offset})"


def line_batches(stream: BinaryIO, batch_bytes: int = _BLOCK) -> Iterator[tuple[int, list[bytes]]]:
    """Lines in batches of about `batch_bytes`, with the number of each batch's first line.

    Read a block at a time and split in C: far cheaper per line than iterating a file.
    """
    carry = b""
    number = 1
    while True:
        block = stream.read(batch_bytes)
        if not block:
            break
        lines = (carry + block).split(b"\n")
        carry = lines.pop()
        if lines:
            yield number, lines
            number += len(lines)
    if carry:
        yield number, [carry]


def starts_with_json(stream: BinaryIO) -> bool:
    """Whether the (buffered) stream's first non-blank byte opens a JSON object."""
    peek = getattr(stream, "peek", None)
    head = peek(64) if peek is not None else b""
    return head.lstrip(_BLANK)[:1] == b"{"


def otlp_frames(stream: BinaryIO, limit: int) -> Iterator[Frame]:
    """Each request of a file exporter file: lines, or length-prefixed messages (inflated)."""
    if starts_with_json(stream):
        for first, lines in line_batches(stream):
            for number, line in enumerate(lines, first):
                if line.strip(_BLANK):
                    yield Frame(line, number)
        return
    yield from _prefixed_frames(stream, limit)


def _prefixed_frames(stream: BinaryIO, limit: int) -> Iterator[Frame]:
    offset = 0
    number = 0
    while True:
        header = stream.read(_LENGTH.size)
        if not header:
            return
        number += 1
        if len(header) < _LENGTH.size:
            raise BrokenStream(f"message {number} (byte {offset}): truncated length prefix")
        (length,) = _LENGTH.unpack(header)
        if length > limit:
            raise BrokenStream(
                f"message {number} (byte {offset}): {length} bytes, more than --max-recv-size; "
                "not a file exporter's proto file, or corrupt"
            )
        payload = stream.read(length)
        if len(payload) < length:
            raise BrokenStream(f"message {number} (byte {offset}): truncated")
        yield Frame(payload, number, offset)
        offset += _LENGTH.size + length


def unwrap_message(payload: bytes, limit: int) -> bytes:
    """A message as the exporter compressed it on its own (zstd), inflated; else as it is."""
    if payload.startswith(ZSTD_MAGIC):
        try:
            return inflate(payload, "zstd", limit)
        except RequestTooLarge as error:
            raise MalformedRequest(str(error)) from None
    return payload
