"""The progress bar of a replay on a terminal: bytes read of the total, records/s, windows.

tqdm draws it (rate, time left, terminal width and redraw throttling are its business); it is
left out entirely when stderr is not a terminal, so logs and pipes get the summary line alone.
"""

from __future__ import annotations

import time
from typing import Protocol, TextIO

from tqdm import tqdm

from otlp_stats.replaying.inputs import CountingReader

_REFRESH_SECONDS = 0.25


class Counted(Protocol):
    records: int
    windows: int


class Progress:
    def __init__(self, total_bytes: int, stream: TextIO) -> None:
        self._bar: tqdm[None] | None = None
        if stream.isatty():
            self._bar = tqdm(
                total=total_bytes or None,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                file=stream,
                desc="replay",
                dynamic_ncols=True,
            )
        self._reader: CountingReader | None = None
        self._shown = 0
        self._started = time.monotonic()
        self._next = 0.0

    def begin(self, reader: CountingReader) -> None:
        """A new input: its reader's bytes count from here."""
        self._reader = reader
        self._shown = 0

    def update(self, counts: Counted) -> None:
        if self._bar is None or self._reader is None:
            return
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + _REFRESH_SECONDS
        read = self._reader.bytes_read
        self._bar.update(read - self._shown)
        self._shown = read
        rate = counts.records / max(now - self._started, 1e-9)
        self._bar.set_postfix_str(
            f"{counts.records} records, {rate:,.0f} records/s, {counts.windows} windows",
            refresh=False,
        )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
