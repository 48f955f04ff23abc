"""Bodies compressed as each OTLP/HTTP Content-Encoding a Collector sends, and bombs of each."""

from __future__ import annotations

import gzip
import sys
import zlib
from collections.abc import Callable, Iterable

import cramjam
import lz4.frame

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd

MiB = 1024 * 1024


def _snappy_block(body: bytes) -> bytes:
    return bytes(cramjam.snappy.compress_raw(body))


def _snappy_framed(body: bytes) -> bytes:
    return bytes(cramjam.snappy.compress(body))


# Content-Encoding -> how a sender compresses. "snappy" is the block format, as Collectors send
# it since the confighttp.framedSnappy gate; before, they sent the framed format under that name.
COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.compress,
    "deflate": zlib.compress,
    "zlib": zlib.compress,
    "zstd": zstd.compress,
    "lz4": lz4.frame.compress,
    "snappy": _snappy_block,
    "x-snappy-framed": _snappy_framed,
}


def compress(body: bytes, encoding: str) -> bytes:
    return COMPRESSORS[encoding](body)


def zeros_in_pieces(size: int) -> Iterable[bytes]:
    """`size` zero bytes, a MiB at a time, so that making a bomb never holds its payload."""
    piece = bytes(MiB)
    for _ in range(size // MiB):
        yield piece


def zstd_bomb(inflated_size: int) -> bytes:
    compressor = zstd.ZstdCompressor(level=19)
    parts = [compressor.compress(piece) for piece in zeros_in_pieces(inflated_size)]
    return b"".join([*parts, compressor.flush()])


def lz4_bomb(inflated_size: int) -> bytes:
    compressor = lz4.frame.LZ4FrameCompressor()
    parts = [compressor.begin()]
    parts.extend(compressor.compress(piece) for piece in zeros_in_pieces(inflated_size))
    return b"".join([*parts, compressor.flush()])


def snappy_framed_bomb(inflated_size: int) -> bytes:
    """Framed snappy: chunks of at most 64 KiB each, so it compresses zeros about 20 times."""
    compressor = cramjam.snappy.Compressor()
    for piece in zeros_in_pieces(inflated_size):
        compressor.compress(piece)
    return bytes(compressor.finish())


def snappy_block_bomb(inflated_size: int) -> bytes:
    return _snappy_block(bytes(inflated_size))
