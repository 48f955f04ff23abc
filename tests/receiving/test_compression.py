"""Content-Encoding is undone with the request limit as a cap on the decompressed size: every
encoding a Collector's otlphttp exporter sends, and a bomb of each refused before it inflates."""

from __future__ import annotations

import gzip
import tracemalloc
import zlib
from collections.abc import Callable

import cramjam
import pytest

from otlp_stats.errors import MalformedRequest, RequestTooLarge, UnsupportedMediaType
from otlp_stats.receiving.compression import inflate
from tests.support.encodings import (
    COMPRESSORS,
    compress,
    lz4_bomb,
    snappy_block_bomb,
    snappy_framed_bomb,
    zstd_bomb,
)

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


@pytest.mark.parametrize("encoding", ["br", "x-snappy", "gzip, br"])
def test_other_encodings_are_unsupported(encoding: str) -> None:
    with pytest.raises(UnsupportedMediaType, match="gzip, deflate, zlib, zstd, snappy"):
        inflate(b"whatever", encoding, 100)


@pytest.mark.parametrize("encoding", sorted(COMPRESSORS))
def test_every_encoding_a_collector_sends_is_inflated(encoding: str) -> None:
    assert inflate(compress(BODY, encoding), encoding, len(BODY)) == BODY
    with pytest.raises(RequestTooLarge, match=f"limit of {len(BODY) - 1} bytes"):
        inflate(compress(BODY, encoding), encoding, len(BODY) - 1)


def test_snappy_is_read_as_a_block_or_framed_as_older_collectors_sent_it() -> None:
    # Collectors before the confighttp.framedSnappy gate sent the framing format as "snappy".
    assert inflate(compress(BODY, "x-snappy-framed"), "snappy", len(BODY)) == BODY
    assert inflate(compress(BODY, "snappy"), "snappy", len(BODY)) == BODY


@pytest.mark.parametrize("encoding", ["zstd", "lz4"])
def test_concatenated_frames_inflate_as_one_body(encoding: str) -> None:
    body = compress(b"first ", encoding) + compress(b"second", encoding)
    assert inflate(body, encoding, 100) == b"first second"


def peak_traced_bytes(work: Callable[[], object]) -> int:
    """Peak of Python allocations while `work` runs (the inflated output is all Python bytes)."""
    tracemalloc.start()
    try:
        work()
    except RequestTooLarge:
        pass
    else:
        raise AssertionError("the bomb was not refused")
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak


@pytest.mark.parametrize(
    ("encoding", "bomb"),
    [("zstd", zstd_bomb), ("lz4", lz4_bomb)],
)
def test_a_zstd_or_lz4_bomb_is_refused_a_bounded_piece_past_the_limit(
    encoding: str, bomb: Callable[[int], bytes]
) -> None:
    body = bomb(64 * MiB)
    assert len(body) < MiB // 2
    # The limit plus one bounded piece, not 64 MiB.
    assert peak_traced_bytes(lambda: inflate(body, encoding, MiB)) < 4 * MiB


@pytest.mark.parametrize(
    ("encoding", "bomb"),
    [
        ("snappy", snappy_block_bomb),
        ("snappy", snappy_framed_bomb),
        ("x-snappy-framed", snappy_framed_bomb),
    ],
)
def test_a_snappy_bomb_is_refused_from_its_headers_without_inflating_anything(
    encoding: str, bomb: Callable[[int], bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    body = bomb(64 * MiB)
    assert len(body) < 4 * MiB

    def must_not_inflate(*_: object) -> bytes:
        raise AssertionError("a snappy bomb was inflated")

    monkeypatch.setattr(cramjam.snappy, "decompress", must_not_inflate)
    monkeypatch.setattr(cramjam.snappy, "decompress_raw", must_not_inflate)
    assert peak_traced_bytes(lambda: inflate(body, encoding, MiB)) < MiB // 4


def test_a_snappy_block_whose_header_lies_about_its_length_is_malformed() -> None:
    block = compress(BODY, "snappy")
    short_header = bytes(cramjam.snappy.compress_raw(BODY[:100]))[:1] + block[3:]
    with pytest.raises(MalformedRequest, match="cannot decode snappy"):
        inflate(short_header, "snappy", len(BODY))


@pytest.mark.parametrize("encoding", ["zstd", "lz4", "snappy", "x-snappy-framed"])
@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_broken_bodies_of_every_encoding_are_malformed(encoding: str, damage: str) -> None:
    whole = compress(BODY, encoding)
    body = {"truncated": whole[: len(whole) // 2], "garbage": b"not compressed", "empty": b""}
    with pytest.raises(MalformedRequest):
        inflate(body[damage], encoding, 10 * MiB)


def test_a_framed_snappy_chunk_with_a_bad_checksum_is_malformed() -> None:
    framed = bytearray(compress(BODY, "x-snappy-framed"))
    framed[14] ^= 0xFF  # the first data chunk's checksum (after the 10-byte identifier)
    with pytest.raises(MalformedRequest, match="cannot decode x-snappy-framed"):
        inflate(bytes(framed), "x-snappy-framed", 10 * MiB)
