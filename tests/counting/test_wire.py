"""The C scanner (counting/_wire.c) refuses and counts exactly as the Python view scanner does.

The cases below are the corners of the protobuf wire format where a hand-written walker most
easily parts from upb; each row says what upb's decode of the view does, and both scanners must
do it. The property tests then throw valid requests, bit flips and truncations at both.
"""

from __future__ import annotations

import datasketches
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from otlp_stats.counting import _wire
from otlp_stats.counting.messages import body_hash
from otlp_stats.counting.resolve import LabelRenderer
from otlp_stats.counting.scan import (
    NATIVE_AVAILABLE,
    EventTime,
    NativeScanner,
    Scanner,
    ViewScanner,
    default_scanner,
)
from otlp_stats.errors import MalformedRequest
from otlp_stats.loadgen.workload import Placement, Workload, build_requests
from tests.counting.test_view_equivalence import any_values, requests
from tests.fuzz.decode_path import decode_and_resolve
from tests.support.fakes import export_request, log_record
from tests.support.reference import messages_of

KEY = "service.name"


def test_the_c_scanner_is_built_and_is_the_default() -> None:
    # A build that silently fell back to Python would still pass every other test, slowly.
    assert NATIVE_AVAILABLE
    assert default_scanner(KEY).name == "native"


def _length_delimited(field: int, payload: bytes) -> bytes:
    assert len(payload) < 128
    return bytes([field << 3 | 2, len(payload)]) + payload


def _resource_entry(entry: bytes, records: int = 0) -> bytes:
    """A request whose one resource carries one attribute entry, given as raw bytes."""
    resource = _length_delimited(1, entry)
    record = _length_delimited(5, b"\x0a\x01x")  # body: string "x"
    scope_logs = b"".join(_length_delimited(2, record) for _ in range(records))
    resource_logs = _length_delimited(1, resource) + _length_delimited(2, scope_logs)
    return _length_delimited(1, resource_logs)


def _nested_groups(depth: int) -> bytes:
    return b"\x0b" * depth + b"\x0c" * depth


WIRE_CASES = {
    # name: (wire, accepted by upb's decode of the view)
    "empty": (b"", True),
    "field 0, varint": (b"\x00\x00", False),
    "field 0, length-delimited": (b"\x02\x00", False),
    "field 0, fixed64": (b"\x01" + bytes(8), False),
    "field 0, fixed32": (b"\x05" + bytes(4), False),
    "field 0, group": (b"\x03\x04", False),
    "field 0 inside an unknown group": (b"\x0b\x00\x00\x03\x04\x0c", True),
    "end group outside a group": (b"\x0c", False),
    "wire type 6": (b"\x0e", False),
    "wire type 7": (b"\x0f", False),
    "tag of 6 bytes": (b"\x88\x80\x80\x80\x80\x00\x00", False),
    "tag above 32 bits": (b"\x80\x80\x80\x80\x10\x00", False),
    "largest tag": (b"\xf8\xff\xff\xff\x0f\x00", True),
    "varint of 11 bytes": (b"\x08" + b"\x80" * 10 + b"\x00", False),
    "varint of 10 bytes": (b"\x08" + b"\xff" * 9 + b"\x7f", True),
    "group without end": (b"\x0b", False),
    "group with another end": (b"\x0b\x14", False),
    "truncated fixed64": (b"\x09\x00", False),
    "length past the end": (b"\x12\x05abc", False),
    "length of 2**31": (b"\x12\xff\xff\xff\xff\x07", False),
    "length 0 in 5 bytes": (b"\x0a\x80\x80\x80\x80\x00", True),
    "length 0 in 6 bytes": (b"\x0a\x80\x80\x80\x80\x80\x00", False),
    "unknown field's length 0 in 6 bytes": (b"\x1a\x80\x80\x80\x80\x80\x00", False),
    "varint value of 10 bytes": (b"\x18" + b"\x80" * 9 + b"\x00", True),
    "known field with another wire type": (b"\x0a\x02\x08\x01", True),
    "key not UTF-8": (_resource_entry(b"\x0a\x01\xff\x12\x00"), False),
    "key not UTF-8, then a valid key": (_resource_entry(b"\x0a\x01\xff\x0a\x01a"), False),
    "key is a surrogate": (_resource_entry(b"\x0a\x03\xed\xa0\x80"), False),
    "key is overlong": (_resource_entry(b"\x0a\x02\xc0\xaf"), False),
    "key of 4-byte UTF-8": (_resource_entry(b"\x0a\x04\xf0\x9f\x98\x80"), True),
    "entry with an unknown field": (_resource_entry(b"\x0a\x01a\x18\x01"), True),
    "100 nested groups": (_nested_groups(100), True),
    "101 nested groups": (_nested_groups(101), False),
}


def _accepts(scanner: Scanner, wire: bytes) -> bool:
    try:
        scanner.check(wire)
    except MalformedRequest:
        return False
    return True


@pytest.mark.parametrize("case", WIRE_CASES)
def test_both_scanners_refuse_what_upb_refuses(case: str) -> None:
    wire, accepted = WIRE_CASES[case]
    assert _accepts(ViewScanner(KEY), wire) is accepted
    assert _accepts(NativeScanner(KEY), wire) is accepted


@pytest.mark.parametrize("length", [1, 7, 8, 9, 15, 16, 17, 24])
def test_a_key_is_checked_as_utf8_wherever_its_bytes_are_not_ascii(length: int) -> None:
    # The C check reads a key eight bytes at a time, the last eight overlapping: every position
    # of every such length must still be looked at.
    for position in range(length):
        for odd, valid in ((b"\xff", False), ("é".encode(), True), (b"\xc3", False)):
            if position + len(odd) > length:
                continue
            key = b"k" * position + odd + b"k" * (length - position - len(odd))
            assert len(key) == length
            wire = _resource_entry(_length_delimited(1, key), records=1)
            assert _accepts(ViewScanner(KEY), wire) is valid, key
            assert _accepts(NativeScanner(KEY), wire) is valid, key


def test_an_entry_with_an_unknown_field_is_not_an_attribute_in_either_scanner() -> None:
    known = b"\x0a\x01k\x12\x02\x0a\x00"  # k = ""
    for entry, label in ((known, ""), (known + b"\x18\x01", None)):  # then with a field 3
        for scanner in (ViewScanner("k"), NativeScanner("k")):
            checked = scanner.check(_resource_entry(entry, records=2))
            assert checked.records == 2
            assert list(scanner.tally(checked, LabelRenderer())) == [label]


def test_malformed_requests_are_refused_with_a_reason() -> None:
    with pytest.raises(MalformedRequest, match=r"cannot decode ExportLogsServiceRequest: .*group"):
        NativeScanner(KEY).check(b"\x0b")


@pytest.mark.parametrize("placement", list(Placement))
def test_the_reference_workload_counts_alike_in_both_scanners(placement: Placement) -> None:
    for prepared in build_requests(Workload(placement=placement, pool_size=3)):
        counted = []
        for scanner in (ViewScanner(KEY), NativeScanner(KEY)):
            checked = scanner.check(prepared.payload)
            assert checked.records == prepared.records
            messages = messages_of(scanner.tally(checked, LabelRenderer()))
            counted.append(messages)
            expected = {label: tally.records for label, tally in prepared.tallies.items()}
            assert {label: records for label, (_, records) in messages.items()} == expected
        assert counted[0] == counted[1]


def _datasketches_bytes(hashes: list[int]) -> bytes:
    sketch = datasketches.update_theta_sketch(20)
    for digest in hashes:
        sketch.update(digest)
    return bytes(sketch.compact(True).serialize())


@pytest.mark.parametrize(
    "bodies",
    [
        ["one"],  # one entry: the one-word preamble
        ["a", "b", "a", "c", "b"],  # duplicates: each message once
        [f"message {n}" for n in range(5_000)],  # more than the service's k: still all of them
        ["m4", "m157"] * 10_000,  # two messages, each many times over, in one sort bucket
    ],
    ids=["one", "duplicates", "many", "few-repeated"],
)
def test_each_value_s_sketch_is_what_datasketches_serializes_for_the_same_hashes(
    bodies: list[str],
) -> None:
    wire = export_request([log_record(body, **{KEY: "v"}) for body in bodies]).SerializeToString()
    [(raw, records, sketch)], structured, *_ = _wire.tally(_wire.check(wire, KEY.encode()))
    assert raw == AnyValue(string_value="v").SerializeToString()
    assert (records, structured) == (len(bodies), [])
    hashes = [body_hash(AnyValue(string_value=body).SerializeToString()) for body in bodies]
    assert sketch == _datasketches_bytes(hashes)


def test_the_c_sketch_of_known_string_bodies_is_pinned_byte_for_byte() -> None:
    # The C path hashes string bodies itself (XXH3, then MurmurHash3 with seed 9001), apart from
    # messages.py: its bytes are pinned too, to what tests/test_messages.py pins for Python.
    bodies = ["one", "two", "one"]
    wire = export_request([log_record(body, **{KEY: "v"}) for body in bodies]).SerializeToString()
    [(_, records, sketch)], *_ = _wire.tally(_wire.check(wire, KEY.encode()))
    assert records == 3
    assert sketch is not None
    assert sketch.hex() == "02030300001acc930200000000000000bcffc621d582a905ce6558e097d58d68"


def test_other_bodies_come_back_once_per_value_they_occur_under_and_make_no_sketch() -> None:
    bodies = [(7, "v"), (7, "v"), (8, "v"), (7, "w"), (None, "w"), (None, "w")]
    records = [log_record(7 if body is None else body, **{KEY: value}) for body, value in bodies]
    for record, (body, _) in zip(records, bodies, strict=True):
        if body is None:
            record.ClearField("body")  # no body at all: the view has it empty
    scan = _wire.check(export_request(records).SerializeToString(), KEY.encode())
    groups, structured, *_ = _wire.tally(scan)
    assert [(records, sketch) for _, records, sketch in groups] == [(3, None), (3, None)]
    seven, eight = (AnyValue(int_value=n).SerializeToString() for n in (7, 8))
    assert sorted(structured) == [(0, seven), (0, eight), (1, b""), (1, seven)]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    request=requests,
    flips=st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(1, 255)), max_size=3),
    cut=st.integers(0, 8),
)
def test_mutated_requests_are_refused_or_counted_alike(
    request: ExportLogsServiceRequest, flips: list[tuple[int, int]], cut: int
) -> None:
    wire = bytearray(request.SerializeToString())
    for position, mask in flips:
        if wire:
            wire[position % len(wire)] ^= mask
    # decode_and_resolve asserts the two scanners agree on every way a front door reads it.
    decode_and_resolve(bytes(wire[: max(0, len(wire) - cut)]))


# Raw encodings a generator of valid messages never writes: unknown fields of every wire type
# (known numbers with the wrong type among them) at every level, nested groups, fields repeated
# and in any order, entries with extra fields, keys that are not UTF-8.
def _varint(number: int) -> bytes:
    out = bytearray()
    while True:
        low, number = number & 0x7F, number >> 7
        out.append(low | (0x80 if number else 0))
        if not number:
            return bytes(out)


def _field(number: int, wire_type: int, payload: bytes = b"") -> bytes:
    tag = _varint(number << 3 | wire_type)
    if wire_type == 2:
        return tag + _varint(len(payload)) + payload
    return tag + payload


_numbers = st.integers(1, 12)
_scalar_unknowns = st.one_of(
    st.builds(lambda n, v: _field(n, 0, _varint(v)), _numbers, st.integers(0, 2**64 - 1)),
    st.builds(lambda n, b: _field(n, 1, b), _numbers, st.binary(min_size=8, max_size=8)),
    st.builds(lambda n, b: _field(n, 5, b), _numbers, st.binary(min_size=4, max_size=4)),
    st.builds(lambda n, b: _field(n, 2, b), _numbers, st.binary(max_size=6)),
)
_unknowns = st.recursive(
    _scalar_unknowns,
    lambda inner: st.builds(
        lambda n, parts: _field(n, 3) + b"".join(parts) + _field(n, 4),
        _numbers,
        st.lists(inner, max_size=3),
    ),
    max_leaves=6,
)
_keys = st.one_of(
    st.sampled_from([b"k", b"k", b"other", b"", "é".encode()]),
    st.binary(max_size=3),  # mostly not UTF-8
)


def _shuffled(parts: st.SearchStrategy[list[bytes]]) -> st.SearchStrategy[bytes]:
    return st.builds(lambda p, r: b"".join(r.sample(p, len(p))), parts, st.randoms())


_entries = _shuffled(
    st.tuples(
        st.lists(_keys.map(lambda k: _field(1, 2, k)), max_size=2),
        st.lists(any_values.map(lambda v: _field(2, 2, v.SerializeToString())), max_size=2),
        st.lists(_unknowns, max_size=1),
    ).map(lambda t: [*t[0], *t[1], *t[2]])
)


def _message(*parts: st.SearchStrategy[list[bytes]]) -> st.SearchStrategy[bytes]:
    return _shuffled(
        st.tuples(*parts, st.lists(_unknowns, max_size=2)).map(
            lambda t: [part for group in t for part in group]
        )
    )


def _attributes_at(number: int) -> st.SearchStrategy[list[bytes]]:
    return st.lists(_entries.map(lambda e: _field(number, 2, e)), max_size=3)


_records = _message(
    st.lists(any_values.map(lambda v: _field(5, 2, v.SerializeToString())), max_size=2),
    _attributes_at(6),
)
_scope_logs = _message(
    st.lists(_message(_attributes_at(3)).map(lambda s: _field(1, 2, s)), max_size=2),
    st.lists(_records.map(lambda r: _field(2, 2, r)), max_size=4),
)
_resource_logs = _message(
    st.lists(_message(_attributes_at(1)).map(lambda s: _field(1, 2, s)), max_size=2),
    st.lists(_scope_logs.map(lambda s: _field(2, 2, s)), max_size=3),
)
raw_requests = _message(st.lists(_resource_logs.map(lambda r: _field(1, 2, r)), max_size=3))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw_requests)
def test_odd_but_valid_encodings_are_refused_or_counted_alike(wire: bytes) -> None:
    decode_and_resolve(wire)


# Event time: a record's times as raw fields, and the window (10 s) each scanner puts it in.
_ARRIVAL_NS = 1_767_225_600_000_000_000
_EVENT_TIME = EventTime.of(10, 300)
_SECOND = 10**9


def _fixed64(number: int, value: int) -> bytes:
    return _field(number, 1, value.to_bytes(8, "little"))


TIME_CASES = {
    # name: (the record's time fields, raw; the window its record lands in, or None: malformed)
    "time_unix_nano": (_fixed64(1, _ARRIVAL_NS - 20 * _SECOND), _ARRIVAL_NS // 10**10 - 2),
    "observed time when time is 0": (
        _fixed64(1, 0) + _fixed64(11, _ARRIVAL_NS - 30 * _SECOND),
        _ARRIVAL_NS // 10**10 - 3,
    ),
    "time wins over observed time": (
        _fixed64(11, _ARRIVAL_NS - 30 * _SECOND) + _fixed64(1, _ARRIVAL_NS - 10 * _SECOND),
        _ARRIVAL_NS // 10**10 - 1,
    ),
    "the last time_unix_nano wins": (
        _fixed64(1, _ARRIVAL_NS - 50 * _SECOND) + _fixed64(1, _ARRIVAL_NS - 40 * _SECOND),
        _ARRIVAL_NS // 10**10 - 4,
    ),
    "no time: arrival": (b"", _ARRIVAL_NS // 10**10),
    "time as a varint is an unknown field: arrival": (
        _field(1, 0, _varint(_ARRIVAL_NS - 20 * _SECOND)),
        _ARRIVAL_NS // 10**10,
    ),
    "observed time as fixed32 is an unknown field: arrival": (
        _field(11, 5, bytes(4)),
        _ARRIVAL_NS // 10**10,
    ),
    "truncated time": (_field(1, 1, bytes(7)), None),
    "far future: arrival": (_fixed64(1, 3_992_800_000 * _SECOND), _ARRIVAL_NS // 10**10),
}


@pytest.mark.parametrize("case", TIME_CASES)
def test_both_scanners_read_a_record_s_time_as_upb_does(case: str) -> None:
    times, window = TIME_CASES[case]
    record = _field(5, 2, b"\x0a\x01x") + times
    wire = _field(1, 2, _field(2, 2, _field(2, 2, record)))
    for scanner in (ViewScanner(KEY, _EVENT_TIME), NativeScanner(KEY, _EVENT_TIME)):
        if window is None:
            with pytest.raises(MalformedRequest):
                scanner.check(wire)
            continue
        tally = scanner.tally_windows(scanner.check(wire), LabelRenderer(), _ARRIVAL_NS)
        assert {index: labels[None].records for index, labels in tally.windows.items()} == {
            window: 1
        }, scanner.name


def test_one_request_feeds_many_windows_grouped_by_window_and_value() -> None:
    records = []
    for n in range(300):
        record = log_record(f"body {n % 7}", **{KEY: f"v{n % 3}"})
        record.time_unix_nano = _ARRIVAL_NS - (n % 5) * 10 * _SECOND
        records.append(record)
    wire = export_request(records).SerializeToString()
    tallies = [
        scanner.tally_windows(scanner.check(wire), LabelRenderer(), _ARRIVAL_NS)
        for scanner in (ViewScanner(KEY, _EVENT_TIME), NativeScanner(KEY, _EVENT_TIME))
    ]
    python, native = ({i: messages_of(t) for i, t in tally.windows.items()} for tally in tallies)
    assert python == native
    assert len(native) == 5 and all(len(labels) == 3 for labels in native.values())
    assert sum(records for labels in native.values() for _, records in labels.values()) == 300


def test_arrival_time_notes_no_times() -> None:
    scan = _wire.check(export_request([log_record("x")]).SerializeToString(), KEY.encode())
    with pytest.raises(ValueError, match="checked with times"):
        _wire.tally_windows(scan, _ARRIVAL_NS, 10 * _SECOND, 0)
