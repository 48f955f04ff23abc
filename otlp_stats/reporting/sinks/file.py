"""file:///path.jsonl: appended JSON lines, rotated by size, a bounded number of old files kept."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from otlp_stats.reporting.sinks.base import RetryLater, SinkReport
from otlp_stats.reporting.sinks.uri import FileSpec


class RotatingFile:
    """reports.jsonl, then reports.jsonl.1 (newest old file) .. reports.jsonl.N."""

    def __init__(self, spec: FileSpec) -> None:
        self._path = spec.path
        self._max_bytes = spec.max_bytes
        self._backups = spec.backups

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def deliver(self, item: SinkReport) -> None:
        data = (item.line + "\n").encode("utf-8")
        try:
            # On a worker thread: a write stuck on a hung network volume must not hold up the
            # other sinks, which share the sinks' event loop.
            await asyncio.to_thread(self._append, data)
        except OSError as error:  # a full disk may have room later
            raise RetryLater(f"cannot write {self._path}: {error}") from None

    def _append(self, data: bytes) -> None:
        try:
            size = self._path.stat().st_size
        except FileNotFoundError:
            size = 0
        # One report is never split: a report larger than max_bytes gets a file of its own.
        if size and size + len(data) > self._max_bytes:
            self._rotate()
        # Opened per report: a file moved away by logrotate is followed by a new one.
        with open(self._path, "ab") as out:
            out.write(data)

    def _rotate(self) -> None:
        if self._backups == 0:
            self._path.unlink(missing_ok=True)
            return
        for index in range(self._backups - 1, 0, -1):
            older = self._backup(index)
            if older.exists():
                os.replace(older, self._backup(index + 1))
        os.replace(self._path, self._backup(1))

    def _backup(self, index: int) -> Path:
        return self._path.with_name(f"{self._path.name}.{index}")
