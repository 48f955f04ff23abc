"""Patterns counted in the scan: both scanners give each value's patterns, with their records
and smallest example, equal to each other and to the masker applied record by record, for one
key or several, by arrival or event time, with a team's rules or without, on Loghub's messages,
structured bodies and hostile ones."""

from __future__ import annotations

import itertools
import random
from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import HealthCheck, given, settings
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    ArrayValue,
    KeyValue,
    KeyValueList,
)

from bench.patterns_accuracy import SYSTEMS, default_data, read_system
from otlp_stats.counting.record_patterns import (
    EMPTY_PATTERN,
    UNDECODABLE_PATTERN,
    body_pattern,
    string_text,
)
from otlp_stats.counting.resolve import LabelRenderer
from otlp_stats.counting.scan import (
    NATIVE_AVAILABLE,
    EventTime,
    NativeScanner,
    Scanner,
    Tally,
    ViewScanner,
)
from otlp_stats.patterns.masker import Masker
from otlp_stats.patterns.rules import parse_rules
from otlp_stats.patterns.tally import PatternCount, merge_counts
from tests.counting.test_view_equivalence import ARRIVAL_NS, requests
from tests.support.fakes import export_request, log_record

pytestmark = pytest.mark.skipif(not NATIVE_AVAILABLE, reason="the C wire scanner is not built")

KEYS = ("service", "host", "level")
EVENT_TIME = EventTime.of(10, 300)
_SECOND = 10**9


def _patterns(tally: Tally) -> dict[str | None, tuple[PatternCount, ...]]:
    """Each label's patterns as one table (a label's tally may list a pattern once per raw
    value rendering alike), most records first: what an aggregator would keep."""
    return {label: merge_counts([counted.patterns]) for label, counted in tally.items()}


def _check_sums(tally: Tally) -> None:
    for counted in tally.values():
        assert sum(p.records for p in counted.patterns) == counted.records


def _scanners(
    keys: str | tuple[str, ...], masker: Masker, event_time: EventTime | None = None
) -> tuple[Scanner, Scanner]:
    return (
        ViewScanner(keys, event_time, masker=masker),
        NativeScanner(keys, event_time, masker=masker),
    )


def _loghub_messages() -> list[str]:
    data = default_data()
    if not data.is_dir():
        pytest.skip("Loghub-2k is not there")
    return [message for system in SYSTEMS for message in read_system(data, system)[0]]


def _structured(rng: random.Random) -> AnyValue:
    user = AnyValue(string_value=rng.choice(["bob", "alice"]))
    took = AnyValue(int_value=rng.randrange(100))
    return rng.choice(
        [
            AnyValue(
                kvlist_value=KeyValueList(
                    values=[KeyValue(key="user", value=user), KeyValue(key="took_ms", value=took)]
                )
            ),
            AnyValue(array_value=ArrayValue(values=[user, took])),
            AnyValue(int_value=rng.randrange(10)),
            AnyValue(double_value=rng.random()),
            AnyValue(bytes_value=rng.randbytes(3)),
            AnyValue(),
        ]
    )


def _corpus_request(rng: random.Random, messages: list[str], records: int) -> bytes:
    """Loghub messages (some repeated) and structured bodies, under three keys at record, scope
    and resource level, dated over several windows, some without a body or a time."""
    request = ExportLogsServiceRequest()
    for r in range(3):
        resource = request.resource_logs.add()
        resource.resource.attributes.add(key="host", value=AnyValue(string_value=f"node-{r}"))
        scope = resource.scope_logs.add()
        scope.scope.attributes.add(key="level", value=AnyValue(int_value=r % 2))
        for _ in range(records // 3):
            record = scope.log_records.add()
            record.time_unix_nano = rng.choice([0, ARRIVAL_NS - rng.randrange(60) * _SECOND])
            kind = rng.random()
            if kind < 0.8:
                record.body.string_value = rng.choice(messages)
            elif kind < 0.95:
                record.body.CopyFrom(_structured(rng))
            if rng.random() < 0.7:
                value = AnyValue(string_value=rng.choice(["checkout", "cart", "search"]))
                record.attributes.add(key="service", value=value)
            if rng.random() < 0.2:  # overrides the resource's
                record.attributes.add(key="host", value=AnyValue(string_value="edge"))
    return request.SerializeToString()


def _labels(attributes: Iterable[KeyValue]) -> dict[str, str]:
    # The corpus's values are strings, or the small ints of "level".
    return {a.key: a.value.string_value or str(a.value.int_value) for a in attributes}


def _expected(wire: bytes, key: str, masker: Masker) -> dict[str | None, tuple[PatternCount, ...]]:
    """The masker applied to every record's body, one by one, through the full OTLP decode."""
    request = ExportLogsServiceRequest.FromString(wire)
    tables: dict[str | None, list[PatternCount]] = defaultdict(list)
    for resource in request.resource_logs:
        above = _labels(resource.resource.attributes)
        for scope in resource.scope_logs:
            inherited = {**above, **_labels(scope.scope.attributes)}
            for record in scope.log_records:
                values = dict(inherited)
                values.update({a.key: a.value.string_value for a in record.attributes})
                pattern, example = body_pattern(record.body.SerializeToString(), masker)
                tables[values.get(key)].append(PatternCount(pattern, 1, example))
    return {label: merge_counts([counts]) for label, counts in tables.items()}


@pytest.mark.parametrize("rules", [False, True], ids=["built-in", "with-rules"])
def test_loghub_patterns_are_the_maskers_in_both_scanners(rules: bool) -> None:
    rng = random.Random(20)
    messages = _loghub_messages()
    rule = "[rules]\nblock = 'blk_-?[0-9]+'\n"
    masker = Masker(parse_rules(rule, "test.toml") if rules else ())
    for _ in range(4):
        wire = _corpus_request(rng, messages, 900)
        expected = [_expected(wire, key, masker) for key in KEYS]
        for scanner in _scanners(KEYS, masker):
            checked = scanner.check(wire)
            tallies = scanner.tally_keys(checked, LabelRenderer())
            for tally in tallies:
                _check_sums(tally)
            assert [_patterns(tally) for tally in tallies] == expected, scanner.name
            assert _patterns(scanner.tally(checked, LabelRenderer())) == expected[0]


def test_loghub_patterns_by_window_are_equal_in_both_scanners() -> None:
    rng = random.Random(21)
    messages = _loghub_messages()
    for _ in range(3):
        wire = _corpus_request(rng, messages, 900)
        view, native = (
            scanner.tally_windows_keys(scanner.check(wire), LabelRenderer(), ARRIVAL_NS)
            for scanner in _scanners(KEYS, Masker(), EVENT_TIME)
        )
        assert len(view) == len(native) == len(KEYS)
        for by_view, by_native in zip(view, native, strict=True):
            assert by_view.windows.keys() == by_native.windows.keys()
            assert len(by_view.windows) > 3  # the corpus spans several windows
            for window, tally in by_view.windows.items():
                _check_sums(tally)
                assert _patterns(tally) == _patterns(by_native.windows[window])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests)
def test_random_requests_give_equal_patterns(request: ExportLogsServiceRequest) -> None:
    wire = request.SerializeToString()
    view, native = _scanners("k", Masker())
    assert _patterns(view.tally(view.check(wire), LabelRenderer())) == _patterns(
        native.tally(native.check(wire), LabelRenderer())
    )
    view, native = _scanners("k", Masker(), EVENT_TIME)
    by_view = view.tally_windows(view.check(wire), LabelRenderer(), ARRIVAL_NS).windows
    by_native = native.tally_windows(native.check(wire), LabelRenderer(), ARRIVAL_NS).windows
    assert {w: _patterns(t) for w, t in by_view.items()} == {
        w: _patterns(t) for w, t in by_native.items()
    }


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _one_value_request(bodies: Iterable[bytes]) -> bytes:
    """Records under value "v" of key "k", each with a body given as its raw AnyValue bytes,
    encoded by hand: protobuf would refuse to encode invalid UTF-8 in a string."""
    value = _field(6, _field(1, b"k") + _field(2, _field(1, b"v")))
    records = b"".join(_field(2, value + _field(5, body)) for body in bodies)
    return _field(1, _field(2, records))


def _string_body(text: bytes) -> bytes:
    return _field(1, text)


def _both(wire: bytes, masker: Masker) -> tuple[PatternCount, ...]:
    """The value's patterns, the same in both scanners (checked here)."""
    view, native = (
        _patterns(scanner.tally(scanner.check(wire), LabelRenderer()))
        for scanner in _scanners("k", masker)
    )
    assert view == native
    return view["v"]


def test_repeated_messages_are_one_pattern_with_their_records_and_smallest_example() -> None:
    texts = [b"payment 8813 accepted in 29ms", b"payment 8812 accepted in 31ms"] * 3
    wire = _one_value_request(_string_body(text) for text in [*texts, b"payment 7 accepted in 1ms"])
    assert _both(wire, Masker()) == (
        PatternCount("payment <*> accepted in <*>ms", 7, "payment 7 accepted in 1ms"),
    )


@pytest.mark.parametrize("values", [1, 40], ids=["few-pairs", "a-pair-per-record"])
def test_patterns_per_value_whether_values_times_patterns_outnumber_the_records(
    values: int,
) -> None:
    """The C tally finds a (value, pattern)'s entry in a table of every pair when there are no
    more pairs than records, else by hashing: both give the masker's patterns per value."""
    records = [
        log_record(f"{'word ' * n}step {n}", k=f"v{n % values}", other=f"o{n % 3}")
        for n in range(40)
    ]
    wire = export_request(records).SerializeToString()
    for key in ("k", ("k", "other")):
        view, native = _scanners(key, Masker())
        by_view = view.tally_keys(view.check(wire), LabelRenderer())
        by_native = native.tally_keys(native.check(wire), LabelRenderer())
        assert [_patterns(t) for t in by_view] == [_patterns(t) for t in by_native]
        # 40 patterns ("word " repeated 0 to 39 times), each value's own
        assert sum(len(p) for p in _patterns(by_native[0]).values()) == 40
        assert len(by_native[0]) == values


def test_empty_blank_absent_and_undecodable_bodies_have_their_own_patterns() -> None:
    bodies = [_string_body(b""), _string_body(b" \t "), b"", b"\xff\xff", _string_body(b"ok")]
    assert set(_both(_one_value_request(bodies), Masker())) == set(
        [
            PatternCount(EMPTY_PATTERN, 2, ""),
            PatternCount("<null>", 1, ""),
            PatternCount(UNDECODABLE_PATTERN, 1, ""),
            PatternCount("ok", 1, "ok"),
        ]
    )


def test_structured_bodies_have_their_shape_and_rendering() -> None:
    kvlist = AnyValue(
        kvlist_value=KeyValueList(
            values=[
                KeyValue(key="user", value=AnyValue(string_value="bob")),
                KeyValue(key="took_ms", value=AnyValue(int_value=31)),
            ]
        )
    )
    assert _both(_one_value_request([kvlist.SerializeToString()]), Masker()) == (
        PatternCount("{took_ms:<int>,user:<str>}", 1, '{"took_ms":31,"user":"bob"}'),
    )


def test_a_string_field_with_more_after_it_is_patterned_by_its_decode() -> None:
    # Tag 0x0a first, as a plain string body, but followed by another field: not "exactly one
    # string field", so Python decodes it (the last oneof field wins: the int).
    body = _string_body(b"user 1 in") + bytes([0x18, 0x05])
    assert string_text(body) is None
    assert _both(_one_value_request([body]), Masker()) == (PatternCount("<int>", 1, "5"),)


def test_invalid_utf8_is_read_as_replacement_characters() -> None:
    bodies = [_string_body(b"caf\xe9 order 12 \xff"), _string_body(b"caf\xe9 order 13 \xff")]
    assert _both(_one_value_request(bodies), Masker()) == (
        PatternCount("caf\ufffd order <*> \ufffd", 2, "caf\ufffd order 12 \ufffd"),
    )


_BOUNDS = Masker(max_tokens=64, max_length=512)


@pytest.mark.parametrize(
    "text",
    [
        b"7" * 100_000,
        b" ".join(b"t%d" % n for n in range(1_000_000)),
        b" ".join(b"word%c" % (97 + n % 26) for n in range(10_000)),
        bytes(random.Random(3).randbytes(50_000)),
        b'"' * 100_000,
    ],
    ids=["100KB-of-digits", "a-million-distinct-tokens", "10000-tokens", "random-bytes", "quotes"],
)
def test_hostile_bodies_stay_within_the_bounds_in_both_scanners(text: bytes) -> None:
    wire = _one_value_request([_string_body(text), _string_body(text + b" 1"), _string_body(b"ok")])
    patterns = _both(wire, _BOUNDS)
    assert sum(p.records for p in patterns) == 3
    for count in patterns:
        assert len(count.pattern.encode()) <= 512
        assert count.pattern.count(" ") <= 64
    # Its records are counted under the masker's pattern of the text as read.
    first = text.decode("utf-8", "replace")
    assert any(p.pattern == (_BOUNDS.mask(first) or EMPTY_PATTERN) for p in patterns)


def test_without_a_masker_no_pattern_is_counted() -> None:
    wire = _one_value_request([_string_body(b"payment 1 accepted")])
    for scanner in (ViewScanner("k"), NativeScanner("k")):
        tally = scanner.tally(scanner.check(wire), LabelRenderer())
        assert tally["v"].records == 1 and tally["v"].patterns == []


def _string_request(rng: random.Random, messages: list[str], records: int) -> bytes:
    """Loghub messages (some repeated) as plain string bodies, under "service" on most
    records and "host" on the resource, dated over a few windows: nothing left to Python."""
    request = ExportLogsServiceRequest()
    resource = request.resource_logs.add()
    resource.resource.attributes.add(key="host", value=AnyValue(string_value="node"))
    scope = resource.scope_logs.add()
    for _ in range(records):
        record = scope.log_records.add()
        record.time_unix_nano = ARRIVAL_NS - rng.randrange(30) * _SECOND
        record.body.string_value = rng.choice(messages[: rng.choice([3, len(messages)])])
        if rng.random() < 0.8:
            value = AnyValue(string_value=rng.choice(["checkout", "cart", "search"]))
            record.attributes.add(key="service", value=value)
    return request.SerializeToString()


def test_patterns_c_made_final_equal_the_ones_python_merges_exactly() -> None:
    """Without a team's rules, the tally takes C's PatternCounts as they are (the fast path);
    with a rule that matches nothing, C hands each text over and Python masks and merges them.
    Both give the same lists, in the same order, of real PatternCounts."""
    rng = random.Random(22)
    messages = _loghub_messages()
    never = Masker(parse_rules("[rules]\nnever = 'a^'\n", "test.toml"))
    keys = ("service", "host")
    fast = NativeScanner(keys, EVENT_TIME, masker=Masker())
    slow = NativeScanner(keys, EVENT_TIME, masker=never)
    for records in (1, 2, 10, 10, 300):
        wire = _string_request(rng, messages, records)
        tallies = [
            (
                scanner.tally(checked, LabelRenderer()),
                scanner.tally_keys(checked, LabelRenderer()),
                [
                    t.windows
                    for t in scanner.tally_windows_keys(checked, LabelRenderer(), ARRIVAL_NS)
                ],
            )
            for scanner in (fast, slow)
            for checked in [scanner.check(wire)]
        ]
        assert tallies[0] == tallies[1]
        one, every_key, windows = tallies[0]
        counts = [
            p for tally in [one, *every_key] for counted in tally.values() for p in counted.patterns
        ]
        counts += [
            p
            for by_window in windows
            for tally in by_window.values()
            for counted in tally.values()
            for p in counted.patterns
        ]
        assert len(counts) >= records // 10 and all(type(p) is PatternCount for p in counts)
        for tally in [one, *every_key]:
            _check_sums(tally)


def test_threads_masking_at_once_each_get_their_own_patterns() -> None:
    """check() masks without the GIL in each thread's own scratch, kept between requests: the
    same requests checked in four threads at once give what one thread gives."""
    rng = random.Random(23)
    messages = _loghub_messages()
    wires = [_string_request(rng, messages, records) for records in (1, 10, 200) * 4]
    scanner = NativeScanner("service", masker=Masker())

    def tallies(_: int) -> list[Tally]:
        return [scanner.tally(scanner.check(wire), LabelRenderer()) for wire in wires * 5]

    alone = tallies(0)
    with ThreadPoolExecutor(4) as pool:
        assert all(result == alone for result in pool.map(tallies, range(8)))


def test_a_pattern_seen_again_is_the_same_str() -> None:
    """C keeps recent patterns' str: a later request's equal pattern is the very object (its
    hash made once), and patterns that differ stay apart."""
    scanner = NativeScanner("k", masker=Masker())

    def patterns(*texts: bytes) -> list[PatternCount]:
        wire = _one_value_request(_string_body(text) for text in texts)
        return scanner.tally(scanner.check(wire), LabelRenderer())["v"].patterns

    [first] = patterns(b"cache miss for tenant 81")
    [again] = patterns(b"cache miss for tenant 7")
    assert again == PatternCount("cache miss for tenant <*>", 1, "cache miss for tenant 7")
    assert again.pattern is first.pattern
    other = patterns(b"cache hit for tenant 7", b"cache miss for tenant 9 of 10")
    assert [p.pattern for p in other] == [
        "cache hit for tenant <*>",
        "cache miss for tenant <*> of <*>",
    ]


def test_more_patterns_than_c_keeps_are_each_their_own() -> None:
    """Past the patterns C keeps (1,024 slots), slots are shared and replaced: every pattern is
    still the masker's, in two passes over 3,000 distinct ones."""
    masker = Masker()
    scanner = NativeScanner("k", masker=masker)
    words = ["".join(letters) for letters in itertools.product("abcdefgh", repeat=4)][:3_000]
    for _ in range(2):
        for word in words:
            text = f"event {word} done for 7 users".encode()
            wire = _one_value_request([_string_body(text)])
            [counted] = scanner.tally(scanner.check(wire), LabelRenderer())["v"].patterns
            assert counted.pattern == masker.mask(text.decode())
