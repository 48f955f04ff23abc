"""The light view in proto/, and the C scanner, count exactly what the full OTLP decode counts.

Property-based: hypothesis builds requests with the counted key on records, scopes and
resources (duplicated, or absent), values of every AnyValue type nested in arrays and kvlists,
and bodies of every type, then checks that the fast path and the straightforward model agree on
every label, every record count and every set of message hashes; with event time, in every
window too (records dated in many windows, in the far future, or not at all).
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
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

from otlp_stats.counting.messages import body_hash, message_hash
from otlp_stats.counting.resolve import LabelRenderer, render_raw, render_value
from otlp_stats.counting.scan import EventTime, NativeScanner, ViewScanner, tally_view
from otlp_stats.counting.view import decode_view, key_may_be_on_records
from tests.support.reference import (
    messages_of,
    reference_messages,
    reference_windows,
    windows_of,
)

KEY = "k"
KEYS = st.sampled_from([KEY, "other", "K", "k.sub", ""])

scalars = st.one_of(
    st.builds(AnyValue),
    st.builds(lambda v: AnyValue(string_value=v), st.text(max_size=8)),
    st.builds(lambda v: AnyValue(int_value=v), st.integers(-(2**63), 2**63 - 1)),
    st.builds(lambda v: AnyValue(bool_value=v), st.booleans()),
    st.builds(lambda v: AnyValue(double_value=v), st.floats(allow_nan=True)),
    st.builds(lambda v: AnyValue(bytes_value=v), st.binary(max_size=6)),
)


def _extend(children: st.SearchStrategy[AnyValue]) -> st.SearchStrategy[AnyValue]:
    arrays = st.lists(children, max_size=3).map(
        lambda items: AnyValue(array_value=ArrayValue(values=items))
    )
    kvlists = st.lists(st.tuples(KEYS, children), max_size=3).map(
        lambda pairs: AnyValue(
            kvlist_value=KeyValueList(values=[KeyValue(key=k, value=v) for k, v in pairs])
        )
    )
    return st.one_of(arrays, kvlists)


any_values = st.recursive(scalars, _extend, max_leaves=8)
# Few distinct bodies, so repeats (and equal kvlists in other key orders) are common.
bodies = st.one_of(
    st.sampled_from(["a", "b", "", "é"]).map(lambda v: AnyValue(string_value=v)),
    any_values,
)
attributes = st.lists(st.tuples(KEYS, any_values), max_size=4).map(
    lambda pairs: [KeyValue(key=k, value=v) for k, v in pairs]
)
# Event time: the request arrives at ARRIVAL_NS; windows are 10 s, the skew allowed 300 s.
ARRIVAL_NS = 1_767_225_600_000_000_000
EVENT_TIME = EventTime.of(10, 300)
times = st.one_of(
    st.just(0),  # unknown
    st.integers(ARRIVAL_NS - 60 * 10**9, ARRIVAL_NS + 300 * 10**9),  # many windows, skew edge
    st.sampled_from([ARRIVAL_NS + 300 * 10**9 + 1, 3_992_800_000 * 10**9, 2**64 - 1, 1]),
)


def _record(
    body: AnyValue, attrs: list[KeyValue], has_body: bool, time: int, observed: int
) -> LogRecord:
    record = LogRecord(attributes=attrs, time_unix_nano=time, observed_time_unix_nano=observed)
    if has_body:
        record.body.CopyFrom(body)
    return record


records = st.builds(_record, bodies, attributes, st.booleans(), times, times)
scope_logs = st.builds(
    lambda attrs, recs: ScopeLogs(
        scope=InstrumentationScope(name="s", attributes=attrs), log_records=recs
    ),
    attributes,
    st.lists(records, max_size=5),
)
requests = st.builds(
    lambda groups: ExportLogsServiceRequest(resource_logs=groups),
    st.lists(
        st.builds(
            lambda attrs, scopes: ResourceLogs(
                resource=Resource(attributes=attrs), scope_logs=scopes
            ),
            attributes,
            st.lists(scope_logs, max_size=3),
        ),
        max_size=3,
    ),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests)
def test_view_counts_what_the_full_decode_counts(request: ExportLogsServiceRequest) -> None:
    wire = request.SerializeToString()
    view = decode_view(wire)
    fast = tally_view(view, KEY, LabelRenderer(), key_may_be_on_records(wire, view, KEY))
    assert messages_of(fast) == reference_messages(request, KEY)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests)
def test_c_scanner_counts_what_the_full_decode_counts(request: ExportLogsServiceRequest) -> None:
    scanner = NativeScanner(KEY)
    tally = scanner.tally(scanner.check(request.SerializeToString()), LabelRenderer())
    assert messages_of(tally) == reference_messages(request, KEY)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests)
def test_both_scanners_window_records_as_the_full_decode_does(
    request: ExportLogsServiceRequest,
) -> None:
    wire = request.SerializeToString()
    expected = reference_windows(
        request, KEY, ARRIVAL_NS, EVENT_TIME.window_ns, EVENT_TIME.max_skew_ns
    )
    latest = ARRIVAL_NS + EVENT_TIME.max_skew_ns
    stamped = [
        record.time_unix_nano or record.observed_time_unix_nano
        for resource_logs in request.resource_logs
        for scope_logs in resource_logs.scope_logs
        for record in scope_logs.log_records
    ]
    for scanner in (ViewScanner(KEY, EVENT_TIME), NativeScanner(KEY, EVENT_TIME)):
        tally = scanner.tally_windows(scanner.check(wire), LabelRenderer(), ARRIVAL_NS)
        assert windows_of(tally.windows) == expected, scanner.name
        assert tally.missing == stamped.count(0), scanner.name
        assert tally.future == sum(time > latest for time in stamped), scanner.name


@settings(max_examples=150, deadline=None)
@given(any_values)
def test_raw_rendering_equals_decoded_rendering(value: AnyValue) -> None:
    assert render_raw(value.SerializeToString()) == render_value(value)


@settings(max_examples=150, deadline=None)
@given(any_values)
def test_raw_body_hash_equals_decoded_body_hash(value: AnyValue) -> None:
    assert body_hash(value.SerializeToString()) == message_hash(value)


def test_string_body_is_identified_by_its_wire_bytes() -> None:
    plain = AnyValue(string_value="hello").SerializeToString()
    assert body_hash(plain) == message_hash(AnyValue(string_value="hello"))
    # No encoder writes the field twice; if one did, the body counts by its bytes.
    doubled = AnyValue(string_value="bye").SerializeToString() + plain
    assert body_hash(doubled) != body_hash(plain)


def test_body_that_is_not_an_any_value_is_counted_by_its_bytes() -> None:
    garbage = b"\xff\xff\xff"
    assert body_hash(garbage) == body_hash(garbage)
    assert body_hash(garbage) != body_hash(b"\xff\xff\xfe")


def test_attribute_value_with_invalid_utf8_renders_with_replacement_characters() -> None:
    raw = b"\x0a\x03a\xffb"  # string_value "a\xffb": not UTF-8, which the view does not check
    assert render_raw(raw) == "a\ufffdb"


def test_long_labels_are_cut_and_keep_distinct_values_apart() -> None:
    renderer = LabelRenderer(max_length=10)
    one = renderer.label(AnyValue(string_value="x" * 20 + "1").SerializeToString())
    two = renderer.label(AnyValue(string_value="x" * 20 + "2").SerializeToString())
    assert one.startswith("x" * 10 + "…#") and two.startswith("x" * 10 + "…#")
    assert one != two
    assert renderer.truncated == 2
