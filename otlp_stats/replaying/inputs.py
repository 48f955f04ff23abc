"""What to replay: files, globs or stdin, each opened as its decompressed bytes.

Compression is told from the bytes, not the name: gzip (1f 8b) and zstd (28 b5 2f fd) magic
numbers, several members or frames one after another too; anything else is read as it is.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import io
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
STDIN = "-"
_CHUNK = 1 << 20
# Small enough that a request-sized frame (hundreds of KB) is read past the buffer, straight
# into its own bytes, rather than copied through it; big enough for few system calls.
_READ_BUFFER = 64 << 10


class InputError(Exception):
    """An input cannot be read at all (no such file, a glob matching nothing)."""


@dataclass(frozen=True)
class ReplayInput:
    """One input: its name in messages, its file (None for stdin read as it comes), its size."""

    name: str
    path: Path | None
    size: int

    def sha256(self) -> str:
        """The digest of the input's bytes as stored (what the replay ledger keys on)."""
        if self.path is None:
            raise InputError("stdin has no digest until it is spooled to a file")
        digest = hashlib.sha256()
        with self.path.open("rb") as file:
            while chunk := file.read(_CHUNK):
                digest.update(chunk)
        return digest.hexdigest()


def expand_inputs(arguments: list[str]) -> list[ReplayInput]:
    """Paths and globs (sorted, as a rotated Collector file's names sort in time order), in the
    order given; `-` or nothing is stdin."""
    inputs: list[ReplayInput] = []
    for argument in arguments or [STDIN]:
        if argument == STDIN:
            inputs.append(ReplayInput("<stdin>", None, 0))
            continue
        matches = sorted(glob.glob(argument)) if glob.has_magic(argument) else [argument]
        if not matches:
            raise InputError(f"{argument}: no file matches")
        for match in matches:
            path = Path(match)
            if not path.is_file():
                raise InputError(f"{match}: no such file")
            inputs.append(ReplayInput(match, path, path.stat().st_size))
    return inputs


@contextmanager
def spooled_stdin(stream: BinaryIO, directory: str | None = None) -> Iterator[ReplayInput]:
    """stdin copied to a temporary file, so that its digest is known before it is counted."""
    with tempfile.NamedTemporaryFile(prefix="otlp-stats-stdin-", dir=directory) as spool:
        shutil.copyfileobj(stream, spool, _CHUNK)
        spool.flush()
        yield ReplayInput("<stdin>", Path(spool.name), spool.tell())


class CountingReader(io.RawIOBase):
    """A file's stored bytes as they are read, counted for the progress bar."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        # Straight into the caller's buffer where the stream can: a frame bigger than the
        # buffered reader's buffer is then read into its bytes object at once, the kernel's
        # copy the only one.
        self._readinto: Callable[[Any], int | None] | None = getattr(raw, "readinto", None)
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._readinto is not None:
            read = self._readinto(buffer) or 0
        else:
            data = self._raw.read(len(buffer))
            read = len(data)
            buffer[:read] = data
        self.bytes_read += read
        return read


@contextmanager
def open_decompressed(
    source: ReplayInput, stdin: BinaryIO
) -> Iterator[tuple[BinaryIO, CountingReader]]:
    """The input's decompressed bytes, and the reader of its stored bytes (for progress)."""
    with ExitStack() as stack:
        raw = (
            stdin
            if source.path is None
            else stack.enter_context(source.path.open("rb", buffering=0))
        )
        counted = CountingReader(raw)
        buffered = io.BufferedReader(counted, _READ_BUFFER)
        magic = buffered.peek(4)[:4]
        stream: BinaryIO
        if magic.startswith(GZIP_MAGIC):
            stream = gzip.GzipFile(fileobj=buffered, mode="rb")  # type: ignore[assignment]
        elif magic.startswith(ZSTD_MAGIC):
            stream = zstd.ZstdFile(buffered, mode="rb")  # type: ignore[assignment]
        else:
            stream = buffered
        yield stream, counted
