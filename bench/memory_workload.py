"""The memory scenarios: requests made on the fly from a template, and the exact counts they carry.

Ten million distinct bodies cannot come from a pool of pre-built requests, and building each
request through protobuf objects would make the client slower than the server. So one request
is serialized once with placeholder text, and every request after it is that template with
fixed-width decimal counters written into the body and value by bytes formatting: every
string keeps its length, so every protobuf length prefix stays valid.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from functools import cached_property

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

VALUE_PREFIX = "value-"
# Twelve digits number a trillion bodies; the run never comes near, and a fixed width is what
# keeps the wire lengths constant.
_BODY_DIGITS = 12
# Placeholders that protobuf's own bytes (tags, varints, fixed64 stamps) never spell out in a
# run this long; the template build checks it found exactly one of each per record.
_BODY_MARK = b"~" * _BODY_DIGITS
_VALUE_MARK_CHAR = b"^"
_FILLER = "the quick brown fox logs a distinct line and the sketch keeps only its hash. "
_EPOCH_NANOS = 1_767_225_600 * 10**9  # 2026-01-01T00:00:00Z, fixed so payloads are repeatable


@dataclass(frozen=True)
class MemoryScenario:
    """One memory workload: record r carries body r // body_repeat and value body % values."""

    name: str
    title: str
    records: int
    records_per_request: int
    distinct_values: int
    body_length: int
    callers: int
    body_repeat: int = 1
    attribute_key: str = "service.name"
    # The service's own flags; the defaults here are the service's defaults, stated so the
    # run does not depend on them staying so.
    max_values: int = 10_000
    sketch_lg_k: int = 12

    def __post_init__(self) -> None:
        if min(self.records, self.records_per_request, self.distinct_values) < 1:
            raise ValueError("records, records_per_request and distinct_values must be positive")
        if self.body_repeat < 1 or self.callers < 1:
            raise ValueError("body_repeat and callers must be at least 1")
        if self.body_length < len(self.name) + _BODY_DIGITS + 2:
            raise ValueError(f"body_length must leave room for the {_BODY_DIGITS}-digit counter")

    @property
    def requests(self) -> int:
        return -(-self.records // self.records_per_request)

    @property
    def bodies(self) -> int:
        """Distinct bodies sent in all."""
        return -(-self.records // self.body_repeat)

    @property
    def values_sent(self) -> int:
        """Values that occur at all: fewer than distinct_values when there are fewer bodies."""
        return min(self.distinct_values, self.bodies)

    @property
    def value_digits(self) -> int:
        # At least six, so the placeholder is a run no single protobuf byte can fake.
        return max(6, len(str(self.distinct_values - 1)))

    def value_label(self, value: int) -> str:
        return f"{VALUE_PREFIX}{value:0{self.value_digits}d}"

    def value_index(self, label: str) -> int | None:
        """The index a reported label names, or None when it is not one this scenario sends."""
        digits = label.removeprefix(VALUE_PREFIX)
        if digits == label or len(digits) != self.value_digits or not digits.isdigit():
            return None
        index = int(digits)
        return index if index < self.distinct_values else None

    def distinct_bodies_of(self, value: int) -> int:
        """Exact distinct bodies sent under `value`: bodies b < bodies with b % values == value."""
        whole, rest = divmod(self.bodies, self.distinct_values)
        return whole + (1 if value < rest else 0)

    def records_of(self, value: int) -> int:
        """Exact records sent under `value`; only the last body may be sent fewer times."""
        records = self.distinct_bodies_of(value) * self.body_repeat
        last_body = self.bodies - 1
        if last_body % self.distinct_values == value:
            records -= self.bodies * self.body_repeat - self.records
        return records

    def scaled(self, scale: float) -> MemoryScenario:
        """The same shape with `scale` times the records (and values, where each has one)."""
        records = max(1, round(self.records * scale))
        values = self.distinct_values
        if self.distinct_values == self.records:
            values = records
        return replace(self, records=records, distinct_values=values)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> MemoryScenario:
        return cls(**json.loads(text))


class RequestTemplate:
    """Serialized Export requests of a scenario, made by bytes formatting of one template."""

    def __init__(self, scenario: MemoryScenario) -> None:
        self.scenario = scenario
        self._formats: dict[int, bytes] = {}

    def payload(self, index: int) -> bytes:
        """Request `index` (0-based): records index*n ..; the last request may be shorter."""
        scenario = self.scenario
        first = index * scenario.records_per_request
        count = min(scenario.records_per_request, scenario.records - first)
        if index < 0 or count <= 0:
            raise IndexError(f"request {index} is past the scenario's {scenario.requests}")
        records = range(first, first + count)
        bodies = (
            records if scenario.body_repeat == 1 else [r // scenario.body_repeat for r in records]
        )
        counters: list[int] = [0] * (2 * count)
        # Protobuf writes fields in number order: body (5) before attributes (6).
        counters[0::2] = bodies
        counters[1::2] = [body % scenario.distinct_values for body in bodies]
        return self._format(count) % tuple(counters)

    def records_in(self, index: int) -> int:
        first = index * self.scenario.records_per_request
        return max(0, min(self.scenario.records_per_request, self.scenario.records - first))

    def _format(self, count: int) -> bytes:
        if count not in self._formats:
            self._formats[count] = self._build_format(count)
        return self._formats[count]

    @cached_property
    def _value_mark(self) -> bytes:
        return _VALUE_MARK_CHAR * self.scenario.value_digits

    def _build_format(self, count: int) -> bytes:
        scenario = self.scenario
        scope_logs = ScopeLogs(scope=InstrumentationScope(name="bench.memory", version="1"))
        scope_logs.log_records.extend(self._placeholder_record() for _ in range(count))
        request = ExportLogsServiceRequest(
            resource_logs=[
                ResourceLogs(
                    resource=Resource(attributes=[_string("host.name", "bench-memory")]),
                    scope_logs=[scope_logs],
                )
            ]
        )
        template = request.SerializeToString().replace(b"%", b"%%")
        value_mark = self._value_mark
        if template.count(_BODY_MARK) != count or template.count(value_mark) != count:
            raise RuntimeError("a placeholder also occurs in protobuf's own bytes")
        value_format = b"%0" + str(scenario.value_digits).encode() + b"d"
        body_format = b"%0" + str(_BODY_DIGITS).encode() + b"d"
        return template.replace(_BODY_MARK, body_format).replace(value_mark, value_format)

    def _placeholder_record(self) -> LogRecord:
        scenario = self.scenario
        head = f"{scenario.name}-{_BODY_MARK.decode()} "
        body = (head + _FILLER * (scenario.body_length // len(_FILLER) + 1))[: scenario.body_length]
        value = VALUE_PREFIX + self._value_mark.decode()
        return LogRecord(
            time_unix_nano=_EPOCH_NANOS,
            severity_number=9,  # type: ignore[arg-type]
            severity_text="INFO",
            body=AnyValue(string_value=body),
            attributes=[_string(scenario.attribute_key, value)],
        )


def _string(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))
