"""The masker's cuts counted in the scan: both scanners count each record whose pattern was cut
at the token or the length bound once, whatever the keys, by arrival or event time, with a
team's rules or without, for plain, invalid UTF-8 and structured bodies alike."""

from __future__ import annotations

import random

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue, KeyValueList

from otlp_stats.counting.record_patterns import body_pattern_cuts
from otlp_stats.counting.resolve import LabelRenderer
from otlp_stats.counting.scan import (
    NATIVE_AVAILABLE,
    EventTime,
    NativeScanner,
    Scanner,
    ViewScanner,
)
from otlp_stats.patterns.masker import CUT_LENGTH, CUT_TOKENS, Masker, PatternCuts
from otlp_stats.patterns.rules import parse_rules
from tests.counting.test_view_equivalence import ARRIVAL_NS

pytestmark = pytest.mark.skipif(not NATIVE_AVAILABLE, reason="the C wire scanner is not built")

KEYS = ("service", "host")
# Small bounds, so that ordinary messages are cut at each.
MAX_TOKENS, MAX_LENGTH = 6, 40
_SECOND = 10**9


def _body(rng: random.Random) -> AnyValue | bytes:
    """A string body, a structured one, or invalid UTF-8 (bytes) to go in a string field."""
    words = [rng.choice(["job", "took", "12ms", "user=bob", "'a b'", "Fri", "x" * 30, "é"])]
    words += [rng.choice(["a", "bb", "31", "id-7", "ccccccccc"]) for _ in range(rng.randrange(12))]
    text = " ".join(words)
    kind = rng.random()
    if kind < 0.15:
        return text.encode() + b" \xff\xfe " + b"q " * rng.randrange(8)
    if kind < 0.3:
        key = KeyValue(key=text, value=AnyValue(int_value=1))
        return AnyValue(kvlist_value=KeyValueList(values=[key]))
    return AnyValue(string_value=text)


def _request(rng: random.Random, records: int) -> tuple[bytes, list[bytes]]:
    """A request's bytes, some bodies repeated, and each record's raw body bytes."""
    request = ExportLogsServiceRequest()
    resource = request.resource_logs.add()
    resource.resource.attributes.add(key="host", value=AnyValue(string_value="node"))
    records_of = resource.scope_logs.add().log_records
    bodies: list[AnyValue | bytes] = []
    placeholders: list[tuple[bytes, bytes]] = []
    for number in range(records):
        body = rng.choice(bodies) if bodies and rng.random() < 0.3 else _body(rng)
        bodies.append(body)
        record = records_of.add()
        record.time_unix_nano = ARRIVAL_NS - rng.randrange(60) * _SECOND
        service = rng.choice(["checkout", "cart"])
        record.attributes.add(key="service", value=AnyValue(string_value=service))
        if isinstance(body, bytes):
            # Invalid UTF-8 is not a str: a placeholder of its length, its bytes put in after.
            placeholder = f"<{number}>".ljust(len(body), "#").encode()
            placeholders.append((placeholder, body))
            record.body.string_value = placeholder.decode()
        else:
            record.body.CopyFrom(body)
    wire = request.SerializeToString()
    for placeholder, body in placeholders:
        wire = wire.replace(placeholder, body, 1)
    raw = [
        b"\x0a" + bytes([len(b)]) + b if isinstance(b, bytes) else b.SerializeToString()
        for b in bodies
    ]
    assert all(len(b) < 0x80 for b in bodies if isinstance(b, bytes))
    return wire, raw


def _expected(raw_bodies: list[bytes], masker: Masker) -> PatternCuts:
    """Each record's body masked on its own, its cuts counted."""
    cuts = PatternCuts()
    for raw in raw_bodies:
        cuts.add_pattern_cuts(body_pattern_cuts(raw, masker)[2], 1)
    return cuts


def _scanners(
    keys: str | tuple[str, ...], masker: Masker, event_time: EventTime | None
) -> list[Scanner]:
    return [ViewScanner(keys, event_time, masker), NativeScanner(keys, event_time, masker)]


@pytest.mark.parametrize("rules", [False, True], ids=["built-in", "with-rules"])
@pytest.mark.parametrize("keys", ["service", KEYS], ids=["one-key", "two-keys"])
@pytest.mark.parametrize("event_time", [None, EventTime.of(10, 300)], ids=["arrival", "event"])
def test_both_scanners_count_each_cut_record_once(
    rules: bool, keys: str | tuple[str, ...], event_time: EventTime | None
) -> None:
    rng = random.Random(f"{rules}{keys}{event_time}")
    team = parse_rules("[rules]\nnever = 'no such text'\n", "t.toml") if rules else ()
    masker = Masker(team, MAX_TOKENS, MAX_LENGTH)
    labels = LabelRenderer()
    for _ in range(5):
        wire, raw = _request(rng, 300)
        expected = _expected(raw, masker)
        assert expected.tokens > 20 and expected.length > 20  # both bounds are exercised
        for scanner in _scanners(keys, masker, event_time):
            checked = scanner.check(wire)
            if isinstance(keys, tuple) and event_time is not None:
                scanner.tally_windows_keys(checked, labels, ARRIVAL_NS)
            elif isinstance(keys, tuple):
                scanner.tally_keys(checked, labels)
            elif event_time is not None:
                scanner.tally_windows(checked, labels, ARRIVAL_NS)
            else:
                scanner.tally(checked, labels)
            assert checked.cut_records() == (expected.tokens, expected.length), scanner.name


def test_without_a_masker_nothing_is_counted() -> None:
    wire, _ = _request(random.Random(3), 50)
    for scanner in (ViewScanner("service"), NativeScanner("service")):
        checked = scanner.check(wire)
        scanner.tally(checked, LabelRenderer())
        assert checked.cut_records() == (0, 0)


def test_the_c_scanner_counts_its_own_cuts_in_check() -> None:
    """No call per message: check's one pass gives the count of the bodies C masked."""
    text = AnyValue(string_value="a b c d e f g h " + "z" * 50)
    request = ExportLogsServiceRequest()
    records = request.resource_logs.add().scope_logs.add().log_records
    for _ in range(7):
        records.add().body.CopyFrom(text)
    masker = Masker((), MAX_TOKENS, MAX_LENGTH)
    assert body_pattern_cuts(text.SerializeToString(), masker)[2] == CUT_TOKENS
    checked = NativeScanner("service", masker=masker).check(request.SerializeToString())
    assert checked.scan is not None and checked.scan.pattern_cuts == (7, 0)
    assert checked.cut_records() == (7, 0)
    assert CUT_LENGTH & body_pattern_cuts(text.SerializeToString(), Masker(max_length=10))[2]
