"""Content-Encoding is undone with the request limit as a cap on the decompressed size."""

from __future__ import annotations

import gzip
import tracemalloc
import zlib

import pytest

from otlp_stats.errors import MalformedRequest, RequestTooLarge, UnsupportedMediaType
from otlp_stats.receiving.compression import inflate

MiB = 1024 * 1024
BODY = b"".join(f"log line {n} with some repetition\n".encode() for n in range(5000))


def gzip_bomb(inflated_size: int) -> bytes:
    """A small gzip body of zeros that inflates to `inflated_size` bytes."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(MiB)
    parts = [compressor.compress(zeros) for _ in range(inflated_size // MiB)]
    return b"".join([*parts, compressor.flush()])


@pytest.mark.parametrize("encoding", ["", "identity", "IDENTITY "])
def test_identity_is_the_body_as_sent(encoding: str) -> None:
    assert inflate(b"as sent", encoding, 100) == b"as sent"


@pytest.mark.parametrize("encoding", ["gzip", "GZIP", "x-gzip"])
def test_gzip_is_inflated(encoding: str) -> None:
    assert inflate(gzip.compress(BODY), encoding, len(BODY)) == BODY


def test_concatenated_gzip_members_inflate_as_one_body() -> None:
    assert inflate(gzip.compress(b"first ") + gzip.compress(b"second"), "gzip", 100) == (
        b"first second"
    )


def test_deflate_is_inflated_zlib_wrapped_or_raw() -> None:
    raw = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    raw_body = raw.compress(BODY) + raw.flush()
    assert inflate(zlib.compress(BODY), "deflate", len(BODY)) == BODY
    assert inflate(raw_body, "deflate", len(BODY)) == BODY


def test_the_limit_applies_to_the_decompressed_size() -> None:
    compressed = gzip.compress(BODY)
    assert len(compressed) < len(BODY) // 10
    assert inflate(compressed, "gzip", len(BODY)) == BODY
    with pytest.raises(RequestTooLarge, match=f"limit of {len(BODY) - 1} bytes"):
        inflate(compressed, "gzip", len(BODY) - 1)


def test_a_gzip_bomb_is_refused_without_inflating_it_in_memory() -> None:
    bomb = gzip_bomb(64 * MiB)
    assert len(bomb) < MiB // 8
    tracemalloc.start()
    try:
        with pytest.raises(RequestTooLarge):
            inflate(bomb, "gzip", MiB)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The limit plus one bounded piece, not 64 MiB.
    assert peak < 4 * MiB


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (gzip.compress(BODY)[:-8], "truncated"),
        (gzip.compress(BODY)[:200], "truncated"),
        (b"", "truncated"),
        (b"not gzip at all", "cannot decode gzip"),
        (gzip.compress(BODY) + b"trailing junk", "cannot decode gzip"),
    ],
)
def test_broken_gzip_is_malformed(body: bytes, reason: str) -> None:
    with pytest.raises(MalformedRequest, match=reason):
        inflate(body, "gzip", 10 * MiB)


def test_data_after_a_deflate_stream_is_malformed() -> None:
    with pytest.raises(MalformedRequest, match="after the end"):
        inflate(zlib.compress(b"body") + b"more", "deflate", 100)


@pytest.mark.parametrize("encoding", ["br", "zstd", "snappy", "gzip, br"])
def test_other_encodings_are_unsupported(encoding: str) -> None:
    with pytest.raises(UnsupportedMediaType, match="gzip, deflate, identity"):
        inflate(b"whatever", encoding, 100)
