"""Undoing an HTTP Content-Encoding with a cap on the decompressed size.

Every encoding the Collector's own OTLP/HTTP receiver accepts (its confighttp): gzip,
zlib/deflate, zstd, lz4 (frame format), snappy (block, or framed as Collectors before the
`confighttp.framedSnappy` gate sent it) and x-snappy-framed. The cap bites before or while
inflating, so a bomb (a few KiB that inflate to gigabytes) is refused after at most `limit`
bytes of output, never inflated whole: gzip, zlib, zstd and lz4 a bounded piece at a time;
snappy from the sizes its headers declare, before anything is inflated.
"""

from __future__ import annotations

import sys
import zlib
from collections.abc import Callable
from typing import Protocol

import cramjam
import lz4.frame

from otlp_stats.errors import MalformedRequest, RequestTooLarge, UnsupportedMediaType

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd

SUPPORTED_ENCODINGS = (
    *("gzip", "deflate", "zlib", "zstd", "snappy", "x-snappy-framed", "lz4", "identity"),
)
_GZIP_WBITS = 16 + zlib.MAX_WBITS
_ZLIB_WBITS = zlib.MAX_WBITS
_RAW_DEFLATE_WBITS = -zlib.MAX_WBITS
# Output produced per decompress call: small enough to stop promptly past the limit.
_PIECE = 256 * 1024
# The framing format's stream identifier chunk, which every framed snappy stream starts with.
_SNAPPY_STREAM_ID = b"\xff\x06\x00\x00sNaPpY"


class _FrameDecompressor(Protocol):
    """zstd's and lz4's one-frame decompressors: the shape of the standard library's bz2/lzma."""

    @property
    def eof(self) -> bool: ...
    @property
    def needs_input(self) -> bool: ...
    @property
    def unused_data(self) -> bytes: ...
    def decompress(self, data: bytes, max_length: int = -1) -> bytes: ...


def inflate(body: bytes, encoding: str, limit: int) -> bytes:
    """The body with `encoding` undone; RequestTooLarge once the result would exceed `limit`.

    `encoding` is the Content-Encoding header's value ("" when there is none).
    """
    coding = encoding.strip().lower()
    if coding in ("", "identity"):
        return body
    if coding in ("gzip", "x-gzip"):
        return _inflate_members(body, _GZIP_WBITS, limit, coding)
    if coding in ("deflate", "zlib"):
        # RFC 9110 deflate is zlib-wrapped, but some senders send raw deflate: a zlib stream
        # starts with a byte whose low four bits are 8 (the deflate method).
        wbits = _ZLIB_WBITS if body[:1] and body[0] & 0x0F == 8 else _RAW_DEFLATE_WBITS
        return _inflate_members(body, wbits, limit, coding)
    if coding == "zstd":
        return _inflate_frames(body, zstd.ZstdDecompressor, zstd.ZstdError, limit, coding)
    if coding == "lz4":
        # python-lz4 reports a corrupt frame as a RuntimeError.
        return _inflate_frames(body, lz4.frame.LZ4FrameDecompressor, RuntimeError, limit, coding)
    if coding == "x-snappy-framed" or (coding == "snappy" and body.startswith(_SNAPPY_STREAM_ID)):
        return _unsnappy_framed(body, limit, coding)
    if coding == "snappy":
        return _unsnappy_block(body, limit)
    raise UnsupportedMediaType(
        f"Content-Encoding {encoding!r:.40} is not supported; use one of "
        + ", ".join(SUPPORTED_ENCODINGS)
    )


def _inflate_members(body: bytes, wbits: int, limit: int, coding: str) -> bytes:
    """Inflate one stream, or for gzip several concatenated members, as gzip(1) does."""
    pieces: list[bytes] = []
    size = 0
    pending = body
    while True:
        inflater = zlib.decompressobj(wbits)
        while not inflater.eof:
            try:
                piece = inflater.decompress(pending, _PIECE)
            except zlib.error as error:
                raise MalformedRequest(f"cannot decode {coding} body: {error}") from None
            pending = inflater.unconsumed_tail
            # Output can still be owed with no input left, so only "nothing in, nothing out"
            # means the stream ended early.
            if not piece and not pending:
                raise MalformedRequest(f"{coding} body is truncated")
            size += len(piece)
            if size > limit:
                raise RequestTooLarge(f"{coding}-decoded body exceeds the limit of {limit} bytes")
            pieces.append(piece)
        pending = inflater.unused_data
        if not pending:
            return b"".join(pieces)
        if wbits != _GZIP_WBITS:
            raise MalformedRequest(f"unexpected data after the end of the {coding} body")


def _inflate_frames(
    body: bytes,
    decompressor: Callable[[], _FrameDecompressor],
    error: type[Exception],
    limit: int,
    coding: str,
) -> bytes:
    """Inflate one or more concatenated zstd or lz4 frames (their formats allow several)."""
    pieces: list[bytes] = []
    size = 0
    pending = body
    while True:
        frame = decompressor()
        data = pending
        while not frame.eof:
            if frame.needs_input and not data:
                raise MalformedRequest(f"{coding} body is truncated")
            try:
                piece = frame.decompress(data, _PIECE)
            except error as failure:
                raise MalformedRequest(f"cannot decode {coding} body: {failure}") from None
            data = b""
            size += len(piece)
            if size > limit:
                raise RequestTooLarge(f"{coding}-decoded body exceeds the limit of {limit} bytes")
            pieces.append(piece)
        pending = frame.unused_data
        if not pending:
            return b"".join(pieces)


def _unsnappy_block(body: bytes, limit: int) -> bytes:
    """A snappy block: its header declares its length, which is checked before inflating."""
    try:
        size = cramjam.snappy.decompress_raw_len(body[:10])
        if size > limit:
            raise RequestTooLarge(f"snappy-decoded body exceeds the limit of {limit} bytes")
        return bytes(cramjam.snappy.decompress_raw(body))
    except cramjam.DecompressionError as error:
        raise MalformedRequest(f"cannot decode snappy body: {error}") from None


def _unsnappy_framed(body: bytes, limit: int, coding: str) -> bytes:
    """The snappy framing format: each chunk's size is read from its header, and their sum
    checked against the limit, before any chunk is inflated."""
    if not body.startswith(_SNAPPY_STREAM_ID):
        raise MalformedRequest(f"{coding} body does not start with the snappy stream identifier")
    size = 0
    position = 0
    while position < len(body):
        kind = body[position]
        start = position + 4
        end = start + int.from_bytes(body[position + 1 : start], "little")
        if end > len(body):
            raise MalformedRequest(f"{coding} body is truncated")
        if kind == 0x00:  # compressed: a 4-byte checksum, then a snappy block
            try:
                size += cramjam.snappy.decompress_raw_len(body[start + 4 : min(end, start + 14)])
            except cramjam.DecompressionError as error:
                raise MalformedRequest(f"cannot decode {coding} body: {error}") from None
        elif kind == 0x01:  # uncompressed: a 4-byte checksum, then the data
            size += max(0, end - start - 4)
        elif 0x02 <= kind <= 0x7F:
            raise MalformedRequest(f"{coding} body has a reserved unskippable chunk {kind:#x}")
        # 0x80-0xfe are skippable (padding among them); 0xff repeats the stream identifier.
        if size > limit:
            raise RequestTooLarge(f"{coding}-decoded body exceeds the limit of {limit} bytes")
        position = end
    try:
        return bytes(cramjam.snappy.decompress(body))
    except cramjam.DecompressionError as error:
        raise MalformedRequest(f"cannot decode {coding} body: {error}") from None
