"""Undoing an HTTP Content-Encoding with a cap on the decompressed size.

The cap bites while inflating, a bounded piece at a time, so a gzip bomb (a few KiB that
inflate to gigabytes) is refused after at most `limit` bytes of output, never inflated whole.
"""

from __future__ import annotations

import zlib

from otlp_stats.errors import MalformedRequest, RequestTooLarge, UnsupportedMediaType

# OTLP/HTTP requires gzip; deflate is what a few exporters (the Python SDK's among them) offer.
SUPPORTED_ENCODINGS = ("gzip", "deflate", "identity")
_GZIP_WBITS = 16 + zlib.MAX_WBITS
_ZLIB_WBITS = zlib.MAX_WBITS
_RAW_DEFLATE_WBITS = -zlib.MAX_WBITS
# Output produced per decompress call: small enough to stop promptly past the limit.
_PIECE = 256 * 1024


def inflate(body: bytes, encoding: str, limit: int) -> bytes:
    """The body with `encoding` undone; RequestTooLarge once the result would exceed `limit`.

    `encoding` is the Content-Encoding header's value ("" when there is none).
    """
    coding = encoding.strip().lower()
    if coding in ("", "identity"):
        return body
    if coding in ("gzip", "x-gzip"):
        return _inflate_members(body, _GZIP_WBITS, limit, coding)
    if coding == "deflate":
        # RFC 9110 deflate is zlib-wrapped, but some senders send raw deflate: a zlib stream
        # starts with a byte whose low four bits are 8 (the deflate method).
        wbits = _ZLIB_WBITS if body[:1] and body[0] & 0x0F == 8 else _RAW_DEFLATE_WBITS
        return _inflate_members(body, wbits, limit, coding)
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
