"""Fakes for unit tests: a clock the test moves, and OTLP request builders."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    ArrayValue,
    InstrumentationScope,
    KeyValue,
    KeyValueList,
)
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

Plain = str | int | float | bool | bytes | list["Plain"] | dict[str, "Plain"] | None


class FakeClock:
    """Wall time that moves only when the test says; sleepers wake when it passes their time."""

    def __init__(self, start: float = 1_767_225_600.0) -> None:  # 2026-01-01T00:00:00Z
        self._now = start
        self._moved = asyncio.Condition()

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        wake_at = self._now + seconds
        async with self._moved:
            await self._moved.wait_for(lambda: self._now >= wake_at)

    async def advance(self, seconds: float) -> None:
        self._now += seconds
        async with self._moved:
            self._moved.notify_all()
        for _ in range(5):  # let woken sleepers run their next step
            await asyncio.sleep(0)

    def set(self, now: float) -> None:
        self._now = now


def any_value(value: Plain) -> AnyValue:
    """A Python value as an OTLP AnyValue (None gives an empty AnyValue)."""
    if value is None:
        return AnyValue()
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, str):
        return AnyValue(string_value=value)
    if isinstance(value, bytes):
        return AnyValue(bytes_value=value)
    if isinstance(value, list):
        return AnyValue(array_value=ArrayValue(values=[any_value(v) for v in value]))
    return AnyValue(kvlist_value=KeyValueList(values=key_values(value)))


def key_values(attributes: Mapping[str, Plain] | Iterable[tuple[str, Plain]]) -> list[KeyValue]:
    pairs = attributes.items() if isinstance(attributes, Mapping) else attributes
    return [KeyValue(key=k, value=any_value(v)) for k, v in pairs]


def log_record(body: Plain, **attributes: Plain) -> LogRecord:
    return LogRecord(body=any_value(body), attributes=key_values(attributes))


def export_request(
    records: Iterable[LogRecord],
    resource: Mapping[str, Plain] | None = None,
    scope: Mapping[str, Plain] | None = None,
) -> ExportLogsServiceRequest:
    return ExportLogsServiceRequest(
        resource_logs=[
            ResourceLogs(
                resource=Resource(attributes=key_values(resource or {})),
                scope_logs=[
                    ScopeLogs(
                        scope=InstrumentationScope(name="test", attributes=key_values(scope or {})),
                        log_records=list(records),
                    )
                ],
            )
        ]
    )


def worked_example_request(key: str = "foo") -> ExportLogsServiceRequest:
    """The issue's worked example: expect bar 1, qux 1, baz 2, unknown 1."""
    attributes: list[dict[str, Plain]] = [
        {key: "bar"},
        {key: "qux"},
        {},
        {key: "baz"},
        {key: "baz"},
    ]
    return export_request(
        log_record(f"my log body {n}", **attrs) for n, attrs in enumerate(attributes, start=1)
    )
