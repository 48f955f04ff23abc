"""Several attribute keys from one walk: each key's tally is what a scanner of that key alone
gives, in both scanners, with the same precedence (record > scope > resource)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from otlp_stats.counting import _wire
from otlp_stats.counting.resolve import LabelRenderer
from otlp_stats.counting.scan import NativeScanner, Scanner, ViewScanner
from otlp_stats.patterns.masker import Masker
from otlp_stats.patterns.rules import parse_rules
from tests.counting.test_view_equivalence import ARRIVAL_NS, EVENT_TIME, requests
from tests.support.fakes import export_request, log_record
from tests.support.reference import messages_of, reference_messages, reference_windows, windows_of

# Three of the keys the generated requests use, "" among them.
THREE = ("k", "other", "")

# No patterns; the built-in rules masked in C; a team's rules (C hands the texts over as they
# are, for Python to mask).
MASKERS = {
    "no-patterns": None,
    "built-in": Masker(),
    "with-rules": Masker(parse_rules("[rules]\nblock = 'blk_-?[0-9]+'\n", "test.toml")),
}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests)
def test_each_key_counts_what_the_full_decode_counts_for_it(
    request: ExportLogsServiceRequest,
) -> None:
    wire = request.SerializeToString()
    expected = [reference_messages(request, key) for key in THREE]
    for scanner in (ViewScanner(THREE), NativeScanner(THREE)):
        checked = scanner.check(wire)
        tallies = scanner.tally_keys(checked, LabelRenderer())
        assert [messages_of(tally) for tally in tallies] == expected, scanner.name
        # tally() stays the first key's, before and after tally_keys.
        assert messages_of(scanner.tally(checked, LabelRenderer())) == expected[0], scanner.name


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests)
def test_each_key_windows_records_as_the_full_decode_does(
    request: ExportLogsServiceRequest,
) -> None:
    wire = request.SerializeToString()
    expected = [
        reference_windows(request, key, ARRIVAL_NS, EVENT_TIME.window_ns, EVENT_TIME.max_skew_ns)
        for key in THREE
    ]
    for scanner in (ViewScanner(THREE, EVENT_TIME), NativeScanner(THREE, EVENT_TIME)):
        tallies = scanner.tally_windows_keys(scanner.check(wire), LabelRenderer(), ARRIVAL_NS)
        assert [windows_of(tally.windows) for tally in tallies] == expected, scanner.name


def _levels_request() -> ExportLogsServiceRequest:
    """Key a on the records, b on the scope, c on the resource, each also set above where it
    is read so precedence decides; one record without a, so a falls back to the scope's."""
    return export_request(
        [
            log_record("m1", a="rec1"),
            log_record("m2", a="rec2", b="rec-b"),
            log_record("m3"),
        ],
        resource={"a": "res-a", "b": "res-b", "c": "res-c"},
        scope={"a": "scope-a", "b": "scope-b"},
    )


@pytest.mark.parametrize("scanner", [ViewScanner(("a", "b", "c")), NativeScanner(("a", "b", "c"))])
def test_each_key_at_its_own_level_with_the_same_precedence(scanner: Scanner) -> None:
    wire = _levels_request().SerializeToString()
    tallies = scanner.tally_keys(scanner.check(wire), LabelRenderer())
    records = [{label: tally.records for label, tally in t.items()} for t in tallies]
    assert records == [
        {"rec1": 1, "rec2": 1, "scope-a": 1},
        {"scope-b": 2, "rec-b": 1},
        {"res-c": 3},
    ]


def test_one_key_given_as_a_tuple_counts_as_the_key_alone() -> None:
    wire = _levels_request().SerializeToString()
    alone, as_tuple = NativeScanner("a"), NativeScanner(("a",))
    assert messages_of(alone.tally(alone.check(wire), LabelRenderer())) == messages_of(
        as_tuple.tally_keys(as_tuple.check(wire), LabelRenderer())[0]
    )


def test_the_c_walk_refuses_more_than_16_keys_and_select_key_checks_its_index() -> None:
    wire = _levels_request().SerializeToString()
    with pytest.raises(TypeError, match="1-16 keys"):
        _wire.check(wire, tuple(b"k%d" % i for i in range(17)))
    with pytest.raises(TypeError, match="1-16 keys"):
        _wire.check(wire, ())
    scan = _wire.check(wire, (b"a", b"b"))
    with pytest.raises(IndexError):
        _wire.select_key(scan, 2)
    with pytest.raises(IndexError):
        _wire.select_key(_wire.check(wire, b"a"), 1)


@pytest.mark.parametrize("masker", MASKERS.values(), ids=MASKERS.keys())
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request=requests)
def test_shared_hash_order_gives_each_key_the_sketch_bytes_of_the_key_alone(
    masker: Masker | None, request: ExportLogsServiceRequest
) -> None:
    """With several keys the C tally hashes and sorts each request's messages once for all keys,
    and groups the patterns check() made once for all keys by each; every key's sketches and
    patterns must still be, byte for byte, those of a scan of that key alone."""
    wire = request.SerializeToString()
    several = NativeScanner(THREE, EVENT_TIME, masker)
    checked = several.check(wire)
    assert checked.scan is not None
    # tally_keys first: it makes the shared order that select_key's tallies then reuse.
    every_key = _wire.tally_keys(checked.scan)
    for index, key in enumerate(THREE):
        alone = NativeScanner(key, EVENT_TIME, masker).check(wire)
        assert alone.scan is not None
        assert every_key[index] == _wire.tally(alone.scan), key
        _wire.select_key(checked.scan, index)
        assert _wire.tally(checked.scan) == _wire.tally(alone.scan), key
        window = (ARRIVAL_NS, EVENT_TIME.window_ns, EVENT_TIME.max_skew_ns)
        assert _wire.tally_windows(checked.scan, *window) == _wire.tally_windows(
            alone.scan, *window
        ), key


@pytest.mark.parametrize("masker", MASKERS.values(), ids=MASKERS.keys())
def test_shared_hash_order_on_a_large_request_with_repeated_messages(
    masker: Masker | None,
) -> None:
    """Hundreds of records, most repeating a few messages (whole buckets of equal hashes)."""
    records = [
        log_record(f"message {n % 7 if n % 3 else n} blk_{n % 4}", k=f"v{n % 5}", other=f"o{n % 2}")
        for n in range(600)
    ]
    wire = export_request(records, resource={"": "r"}).SerializeToString()
    checked = NativeScanner(THREE, masker=masker).check(wire)
    assert checked.scan is not None
    every_key = _wire.tally_keys(checked.scan)
    if masker is not None:  # the patterns are there to compare
        assert all(tallied[2] for tallied in every_key)
    for index, key in enumerate(THREE):
        alone = NativeScanner(key, masker=masker).check(wire)
        assert alone.scan is not None
        assert every_key[index] == _wire.tally(alone.scan), key
        _wire.select_key(checked.scan, index)
        assert _wire.tally(checked.scan) == _wire.tally(alone.scan), key


def test_tally_keys_of_a_one_key_scan_is_its_tally() -> None:
    scan = _wire.check(_levels_request().SerializeToString(), b"a")
    assert _wire.tally_keys(scan) == [_wire.tally(scan)]
    with pytest.raises(TypeError):
        _wire.tally_keys(b"not a scan")  # type: ignore[arg-type]


def test_long_keys_match_only_themselves() -> None:
    """Keys of 17 to 32 bytes are compared in two halves of 16: a key that differs from one of
    them in any single byte, or is one byte longer, is another key."""
    keys = ("http.request.method", "k" * 32, "x" * 17)
    near_misses = [
        "http.request.methoD",  # the last byte
        "http.requesT.method",  # within the first 16 bytes
        "http.request.method.",  # one byte longer
        "k" * 15 + "K" + "k" * 16,  # where the halves meet
        "k" * 33,
    ]
    records = [
        log_record(
            f"message {n}",
            **{key: f"{key[:4]}-{n % 3}" for key in keys},
            **{miss: "decoy" for miss in near_misses[n % len(near_misses) :]},
        )
        for n in range(30)
    ]
    wire = export_request(records).SerializeToString()
    checked = NativeScanner(keys).check(wire)
    assert checked.scan is not None
    every_key = _wire.tally_keys(checked.scan)
    for index, key in enumerate(keys):
        alone = NativeScanner(key).check(wire)
        assert alone.scan is not None
        assert every_key[index] == _wire.tally(alone.scan), key
        values = {raw for raw, _, _ in every_key[index][0]}
        assert len(values) == 3, key  # its own three values, never a decoy
