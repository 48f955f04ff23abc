"""What a serving process and its supervisor say to each other, over one socket pair.

Messages are pickled dataclasses behind a 4-byte length: both ends are processes of the same
service, started from the same code, so nothing foreign is ever unpickled. Each serving process
writes in order: ready, then progress, shares and metrics as they come, then stopped.
"""

from __future__ import annotations

import asyncio
import pickle
import struct
from dataclasses import dataclass

from otlp_stats.counting.aggregator import WindowSnapshot

_LENGTH = struct.Struct("!I")


@dataclass(frozen=True)
class Ready:
    """Serving: the ports it bound (the first process's ports are every later one's)."""

    pid: int
    grpc_port: int
    http_port: int


@dataclass(frozen=True)
class Share:
    """A window this process closed, and its counts of it."""

    snapshot: WindowSnapshot


@dataclass(frozen=True)
class Progress:
    """Every window before `first_open_index` is closed and its share sent; `open_windows`
    windows hold counts not sent yet (what is lost if the process dies now)."""

    first_open_index: int
    open_windows: int


@dataclass(frozen=True)
class Exposition:
    """The process's metrics, in the Prometheus text format."""

    text: bytes


@dataclass(frozen=True)
class Stopped:
    """Drained (or not, within the shutdown grace), every share sent."""

    drained: bool


Message = Ready | Share | Progress | Exposition | Stopped


def encode(message: Message) -> bytes:
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(body)) + body


async def read_message(reader: asyncio.StreamReader) -> Message | None:
    """The next message, or None once the other end has closed (or died)."""
    try:
        header = await reader.readexactly(_LENGTH.size)
        (length,) = _LENGTH.unpack(header)
        body = await reader.readexactly(length)
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    message: Message = pickle.loads(body)
    return message
