"""The synthetic workload: pre-built OTLP Export requests and what each one carries."""

from __future__ import annotations

import enum
import hashlib
import random
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

# A fixed clock for record timestamps keeps payloads byte-identical across processes (the
# harness checks the load generator's digest against its own build). With arrival time these
# stamps never decide a window; an event-time run passes a recent time_base_ns instead.
_EPOCH_NANOS = 1_767_225_600 * 10**9  # 2026-01-01T00:00:00Z

_FILLER = (
    "upstream answered after retry; cache miss for tenant, falling back to primary store "
    "while the connection pool refills and the scheduler rebalances queued jobs. "
)

_METHODS = ("GET", "GET", "GET", "POST", "PUT", "DELETE")
_STATUSES = (200, 200, 200, 201, 204, 404, 500)
_FUNCTIONS = ("handle_request", "load_profile", "charge_card", "render_page")

_ValueMaker = Callable[[random.Random, int], AnyValue]

# Attribute names and value kinds a service's log record typically carries: a mix of
# strings, ints, a bool and a double, so a scan meets every common AnyValue case.
_RECORD_ATTRIBUTES: tuple[tuple[str, _ValueMaker], ...] = (
    ("http.request.method", lambda rng, _: AnyValue(string_value=rng.choice(_METHODS))),
    ("http.response.status_code", lambda rng, _: AnyValue(int_value=rng.choice(_STATUSES))),
    ("url.path", lambda _, n: AnyValue(string_value=f"/api/v1/items/{n % 997}")),
    ("thread.id", lambda rng, _: AnyValue(int_value=rng.randrange(1, 65))),
    ("code.function", lambda rng, _: AnyValue(string_value=rng.choice(_FUNCTIONS))),
    ("enduser.id", lambda _, n: AnyValue(string_value=f"user-{n % 5003}")),
    ("retry", lambda rng, _: AnyValue(bool_value=rng.random() < 0.1)),
    ("duration_ms", lambda rng, _: AnyValue(double_value=round(rng.expovariate(0.05), 3))),
    ("log.file.name", lambda _, __: AnyValue(string_value="app.log")),
)
_SEVERITIES = ((9, "INFO"), (9, "INFO"), (9, "INFO"), (13, "WARN"), (17, "ERROR"), (5, "DEBUG"))


class Placement(enum.StrEnum):
    """Where the counted attribute sits in each request."""

    RECORD = "record"
    SCOPE = "scope"
    RESOURCE = "resource"
    NOWHERE = "nowhere"


@dataclass(frozen=True)
class Workload:
    """Shape of the requests to pre-build; the defaults are the issue's reference workload."""

    records_per_request: int = 1000
    # Counts the counted key too when it sits on the record, so the scan length is the same.
    attributes_per_record: int = 7
    body_length: int = 100
    # Share of records whose body is one of `recurring_messages` bodies that recur across
    # records; every other record's body appears nowhere else in the pool.
    repeated_share: float = 0.2
    attribute_key: str = "service.name"
    distinct_values: int = 10
    placement: Placement = Placement.RECORD
    resources_per_request: int = 10
    recurring_messages: int = 50
    # Distinct requests built; a run cycles through them.
    pool_size: int = 32
    seed: int = 1
    # Record n is stamped time_base_ns + n µs (its observed time 0.25 ms later).
    time_base_ns: int = _EPOCH_NANOS

    def __post_init__(self) -> None:
        positive = {
            "records_per_request": self.records_per_request,
            "body_length": self.body_length,
            "distinct_values": self.distinct_values,
            "resources_per_request": self.resources_per_request,
            "recurring_messages": self.recurring_messages,
            "pool_size": self.pool_size,
        }
        for name, number in positive.items():
            if number < 1:
                raise ValueError(f"{name} must be at least 1, got {number}")
        if self.attributes_per_record < 0:
            raise ValueError("attributes_per_record must not be negative")
        if self.placement is Placement.RECORD and self.attributes_per_record < 1:
            raise ValueError("record placement needs at least one attribute per record")
        if not 0.0 <= self.repeated_share <= 1.0:
            raise ValueError(f"repeated_share must be within [0, 1], got {self.repeated_share}")
        if not self.attribute_key:
            raise ValueError("attribute_key must not be empty")


@dataclass(frozen=True)
class ValueTally:
    """What one request carries for one attribute value."""

    records: int
    bodies: frozenset[str]


@dataclass(frozen=True)
class PreparedRequest:
    """One serialized Export request and, per attribute value (None: key absent), its records."""

    index: int
    payload: bytes
    records: int
    tallies: Mapping[str | None, ValueTally]


def build_requests(workload: Workload) -> list[PreparedRequest]:
    """Build `workload.pool_size` requests, deterministically for a given workload."""
    builder = _RequestBuilder(workload)
    return [builder.build(index) for index in range(workload.pool_size)]


def digest_requests(requests: Sequence[PreparedRequest]) -> str:
    """A short fingerprint of the payloads, to prove two processes built the same requests."""
    sha = hashlib.sha256()
    for request in requests:
        sha.update(len(request.payload).to_bytes(8, "little"))
        sha.update(request.payload)
    return sha.hexdigest()[:16]


def render_value_index(index: int) -> str:
    """The attribute value the workload uses for value number `index`."""
    return f"service-{index:03d}"


class _RequestBuilder:
    """Stateful across the pool so that unique bodies stay unique in every request."""

    def __init__(self, workload: Workload) -> None:
        self.workload = workload
        self.rng = random.Random(workload.seed)
        self.record_serial = 0
        self.group_serial = 0
        self.repeated_serial = 0
        self.recurring = [
            _fit(f"recurring message {k}: ", workload.body_length)
            for k in range(workload.recurring_messages)
        ]
        self.other_attributes = [
            entry for entry in _RECORD_ATTRIBUTES if entry[0] != workload.attribute_key
        ]

    def build(self, index: int) -> PreparedRequest:
        workload = self.workload
        request = ExportLogsServiceRequest()
        records: dict[str | None, int] = defaultdict(int)
        bodies: dict[str | None, set[str]] = defaultdict(set)
        repeated = set(
            self.rng.sample(
                range(workload.records_per_request),
                round(workload.repeated_share * workload.records_per_request),
            )
        )
        groups = min(workload.resources_per_request, workload.records_per_request)
        for group, positions in enumerate(_split(workload.records_per_request, groups)):
            group_value = self._next_value(self.group_serial)
            self.group_serial += 1
            scope_logs = self._add_group(request, index, group, group_value)
            for position in positions:
                value = self._value_for_record(group_value)
                body = self._body(position in repeated)
                scope_logs.log_records.append(self._record(value, body))
                records[value] += 1
                bodies[value].add(body)
        tallies = {
            value: ValueTally(count, frozenset(bodies[value])) for value, count in records.items()
        }
        return PreparedRequest(
            index=index,
            payload=request.SerializeToString(),
            records=workload.records_per_request,
            tallies=tallies,
        )

    def _next_value(self, serial: int) -> str:
        # Cycling (not sampling) makes every value appear, however many there are.
        return render_value_index(serial % self.workload.distinct_values)

    def _value_for_record(self, group_value: str) -> str | None:
        placement = self.workload.placement
        if placement is Placement.NOWHERE:
            return None
        if placement is Placement.RECORD:
            return self._next_value(self.record_serial)
        return group_value

    def _add_group(
        self, request: ExportLogsServiceRequest, index: int, group: int, value: str
    ) -> ScopeLogs:
        key = self.workload.attribute_key
        placement = self.workload.placement
        resource = Resource(
            attributes=[
                _string("host.name", f"node-{(index * 7 + group) % 13:02d}"),
                _string("service.version", "1.4.2"),
                _string("telemetry.sdk.language", "python"),
                _string("telemetry.sdk.name", "opentelemetry"),
            ]
        )
        if placement is Placement.RESOURCE:
            resource.attributes.append(_string(key, value))
        scope = InstrumentationScope(name="app.requests", version="2.0.1")
        if placement is Placement.SCOPE:
            scope.attributes.append(_string(key, value))
        resource_logs = request.resource_logs.add(resource=resource)
        return resource_logs.scope_logs.add(scope=scope)

    def _body(self, repeated: bool) -> str:
        if repeated:
            body = self.recurring[self.repeated_serial % len(self.recurring)]
            self.repeated_serial += 1
            return body
        # The serial and seed lead, so truncation to a short body cannot merge two bodies
        # (down to about 12 characters).
        prefix = f"req {self.workload.seed:x}-{self.record_serial:x} "
        return _fit(prefix, self.workload.body_length)

    def _record(self, value: str | None, body: str) -> LogRecord:
        serial = self.record_serial
        self.record_serial += 1
        rng = self.rng
        severity_number, severity_text = rng.choice(_SEVERITIES)
        record = LogRecord(
            time_unix_nano=self.workload.time_base_ns + serial * 1000,
            observed_time_unix_nano=self.workload.time_base_ns + serial * 1000 + 250_000,
            severity_number=severity_number,  # type: ignore[arg-type]
            severity_text=severity_text,
            body=AnyValue(string_value=body),
            trace_id=rng.randbytes(16),
            span_id=rng.randbytes(8),
            flags=1,
        )
        count = self.workload.attributes_per_record
        others = count - 1 if value is not None and self._key_on_record else count
        record.attributes.extend(self._other_attributes(others, serial))
        if value is not None and self._key_on_record:
            # A random position, so a scan for the key costs what it would in the wild.
            record.attributes.insert(
                rng.randrange(count), _string(self.workload.attribute_key, value)
            )
        return record

    @property
    def _key_on_record(self) -> bool:
        return self.workload.placement is Placement.RECORD

    def _other_attributes(self, count: int, serial: int) -> list[KeyValue]:
        attributes = []
        for position in range(count):
            if position < len(self.other_attributes):
                name, make = self.other_attributes[position]
                attributes.append(KeyValue(key=name, value=make(self.rng, serial)))
            else:
                attributes.append(_string(f"extra.attribute.{position}", f"x{serial % 31}"))
        return attributes


def _split(total: int, parts: int) -> list[range]:
    """Consecutive positions `0..total` cut into `parts` nearly equal runs."""
    bounds = [total * part // parts for part in range(parts + 1)]
    return [range(bounds[part], bounds[part + 1]) for part in range(parts)]


def _fit(prefix: str, length: int) -> str:
    text = prefix
    while len(text) < length:
        text += _FILLER
    return text[:length]


def _string(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))
