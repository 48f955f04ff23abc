"""The light view in proto/, and the C scanner, count exactly what the full OTLP decode counts.

Property-based: hypothesis builds requests with the counted key on records, scopes and
resources (duplicated, or absent), values of every AnyValue type nested in arrays and kvlists,
and bodies of every type, then checks that the fast path and the straightforward model agree on
every label, every record count and every set of message hashes.
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
from otlp_stats.counting.scan import NativeScanner, tally_view
from otlp_stats.counting.view import decode_view, key_may_be_on_records
from tests.support.reference import messages_of, reference_messages

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
records = st.builds(
    lambda body, attrs, has_body: (
        LogRecord(body=body, attributes=attrs) if has_body else LogRecord(attributes=attrs)
    ),
    bodies,
    attributes,
    st.booleans(),
)
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
