"""The per-record work of counting: a worker checks a request's bytes, then tallies them.

One contract, two scanners:

- `NativeScanner` walks the protobuf bytes once in C (_wire.c): its check validates
  as the light view's decode would, resolves the attribute and hashes plain string bodies
  without building a message or a Python object per record, with the GIL released, and notes
  24 bytes per record for the tally, which groups and sketches without walking the bytes again.
- `ViewScanner` does the same through the light view (proto/otlp_stats_view) in Python. It is
  the reference the C scanner is tested against, and the fallback where the extension could
  not be built (no C compiler or no xxhash.h at install time).

Both take one attribute key or several (config.MAX_ATTRIBUTE_KEYS at most): with several, the
one walk over the request resolves every key (each with the same precedence), and tally_keys
gives one Tally per key, in the keys' order, from what that walk noted; tally and
tally_windows give the first key's.

Both give, per attribute value label (None: the key is absent), its records and their signed
64-bit message hashes (messages.body_hash), and both refuse the same malformed requests. With
event time (a scanner made with an EventTime), check also notes each record's time and
tally_windows groups by (window, label) in the same pass, putting a record without a time, or
dated more than the allowed clock skew ahead of its request's arrival, at that arrival. The C
scanner hands most hashes over already made into a compact theta sketch (sketches.py), one per
value per request, so that no Python int is made and no sketch update is called per record.

Made with a Masker, both also count patterns (record_patterns.py): each LabelTally's `patterns`
holds its records' patterns, each once, with its records and smallest message. The C scanner
masks each distinct plain string body of the request once, in check()'s pass without the GIL,
with the masker's C rules, and builds Python objects per distinct (value, pattern) only; bodies
that are not one string field of valid UTF-8 go to Python. With a team's rules (Python regexes,
which run before the built-in rules), C hands each distinct text over and Python masks it:
slower, by the rules' cost per distinct message. Without a masker nothing of this runs.

With a masker, a CheckedRequest's cut_records() are its records whose pattern was cut at the
masker's token or length bound (otlp_stats_pattern_cut_records_total), each record once
whatever the keys: the C scanner's check counts those it masks in its Scan (pattern_cuts, made
in the same pass: no call per message, no object per request), and the tally of the first key
adds those masked in Python (add_pattern_cuts); the view scanner counts in a PatternCuts.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from xxhash import xxh3_64_intdigest

from otlp_stats.counting.aggregator import LabelTally
from otlp_stats.counting.messages import SIGNED_OFFSET, STRING_TAG, body_hash
from otlp_stats.counting.record_patterns import (
    EMPTY_PATTERN,
    BodyPattern,
    PatternGroups,
    body_pattern_cuts,
    count_patterns,
)
from otlp_stats.counting.resolve import LabelRenderer
from otlp_stats.counting.view import (
    ExportLogsRequestView,
    count_records,
    decode_view,
    key_may_be_on_records,
)
from otlp_stats.errors import MalformedRequest
from otlp_stats.patterns.masker import CutCounter, Masker, PatternCuts
from otlp_stats.patterns.tally import PatternCount

try:
    from otlp_stats.counting import _wire
except ImportError:  # built without a C compiler or xxhash.h: the Python scanner counts
    _wire = None  # type: ignore[assignment]

NATIVE_AVAILABLE = _wire is not None


# Per label (None: key absent), what its records are.
Tally = dict[str | None, LabelTally]

K = TypeVar("K", bound=Hashable)

_NS = 1_000_000_000
_MAX_NS = 2**64 - 1


@dataclass(frozen=True)
class EventTime:
    """Event time's rule from a record's time to its window, in integer nanoseconds, so that
    both scanners put every record in the same window to the nanosecond."""

    window_ns: int
    max_skew_ns: int

    @classmethod
    def of(cls, window_seconds: float, max_skew_seconds: float) -> EventTime:
        return cls(max(1, round(window_seconds * _NS)), min(_MAX_NS, round(max_skew_seconds * _NS)))


def arrival_ns(arrival: float) -> int:
    """An arrival time (seconds since the epoch) as the nanoseconds a record's time is in."""
    return math.floor(arrival * _NS)


@dataclass
class WindowedTally:
    """A request's records per window index (time // window length) and label, and how many
    were put at arrival: dated too far ahead of it (`future`), or without a time (`missing`)."""

    windows: dict[int, Tally] = field(default_factory=dict)
    future: int = 0
    missing: int = 0


@dataclass(frozen=True, eq=False)
class CheckedRequest:
    """A request's protobuf bytes that passed its scanner's check, and its record count."""

    wire: bytes
    records: int
    # What the C scanner's check noted per record, for the tally.
    scan: _wire.Scan | None = None
    # What the view scanner's check decoded, so the tally does not decode again.
    view: ExportLogsRequestView | None = None
    # False when no record can carry the key (view.key_may_be_on_records); True is safe.
    key_on_records: bool = True
    # With several keys, key_on_records per key (the view scanner's).
    keys_on_records: tuple[bool, ...] = ()

    def cut_records(self) -> tuple[int, int]:
        """Its records whose pattern was cut at the token bound, at the length bound: complete
        once tallied (Python masks some bodies in the tally, and adds to the count each time:
        a request is tallied once); (0, 0) without a masker. The C scanner's Scan counts them
        itself, so that a request costs no object more for them."""
        return (0, 0) if self.scan is None else self.scan.pattern_cuts


@dataclass(frozen=True, eq=False)
class ViewCheckedRequest(CheckedRequest):
    """The view scanner's: with a masker, its records whose pattern was cut counted here."""

    cuts: PatternCuts | None = None

    def cut_records(self) -> tuple[int, int]:
        cuts = self.cuts
        return (0, 0) if cuts is None else (cuts.tokens, cuts.length)


class Scanner(Protocol):
    name: str
    # The attribute keys it resolves, in order (tally and tally_windows give the first's).
    keys: tuple[str, ...]

    def check(self, wire: bytes) -> CheckedRequest:
        """Validate a serialized ExportLogsServiceRequest; raise MalformedRequest if it is not."""
        ...

    def tally(self, request: CheckedRequest, labels: LabelRenderer) -> Tally:
        """Resolve and hash every record of a checked request."""
        ...

    def tally_windows(
        self, request: CheckedRequest, labels: LabelRenderer, arrival: int
    ) -> WindowedTally:
        """Event time: tally by window too; `arrival` is the request's, in nanoseconds."""
        ...

    def tally_keys(self, request: CheckedRequest, labels: LabelRenderer) -> list[Tally]:
        """tally for every key the scanner was made with, in their order."""
        ...

    def tally_windows_keys(
        self, request: CheckedRequest, labels: LabelRenderer, arrival: int
    ) -> list[WindowedTally]:
        """tally_windows for every key the scanner was made with, in their order."""
        ...


AttributeKeys = str | tuple[str, ...]


def _as_keys(keys: AttributeKeys) -> tuple[str, ...]:
    return (keys,) if isinstance(keys, str) else keys


class NativeScanner:
    name = "native"

    def __init__(
        self,
        attribute_key: AttributeKeys,
        event_time: EventTime | None = None,
        masker: Masker | None = None,
    ) -> None:
        if _wire is None:
            raise RuntimeError("the C wire scanner (otlp_stats.counting._wire) was not built")
        self.keys = _as_keys(attribute_key)
        # One key as bytes: the walk's single-key path; several as a tuple, resolved together.
        self._key: bytes | tuple[bytes, ...] = (
            self.keys[0].encode()
            if len(self.keys) == 1
            else tuple(key.encode() for key in self.keys)
        )
        self._event_time = event_time
        self._masker = masker
        # What check() masks with: the built-in rules within the masker's bounds, or, when the
        # masker has a team's rules (Python regexes, which must run first), nothing: C hands
        # the distinct texts over as they are and Python masks them.
        self._mask_bounds = (
            None if masker is None else (masker.max_tokens, masker.max_length, masker.has_rules)
        )
        # Whether C's patterns are final (no team's rules to run first), read once.
        self._final = masker is not None and not masker.has_rules

    def check(self, wire: bytes) -> CheckedRequest:
        assert _wire is not None
        try:
            scan = _wire.check(wire, self._key, self._event_time is not None, self._mask_bounds)
        except _wire.MalformedWire as error:
            raise MalformedRequest(f"cannot decode ExportLogsServiceRequest: {error}") from None
        return CheckedRequest(wire, scan.records, scan)

    def tally(self, request: CheckedRequest, labels: LabelRenderer) -> Tally:
        assert _wire is not None and request.scan is not None
        return _native_tally(
            _wire.tally(request.scan), labels, self._masker, self._final, cuts=request.scan
        )

    def tally_windows(
        self, request: CheckedRequest, labels: LabelRenderer, arrival: int
    ) -> WindowedTally:
        return self._tally_windows(request, labels, arrival, request.scan)

    def _tally_windows(
        self,
        request: CheckedRequest,
        labels: LabelRenderer,
        arrival: int,
        cuts: CutCounter | None,
    ) -> WindowedTally:
        assert _wire is not None and request.scan is not None and self._event_time is not None
        grouped, structured, future, missing, patterned, unmasked = _wire.tally_windows(
            request.scan, arrival, self._event_time.window_ns, self._event_time.max_skew_ns
        )
        tallies = [
            LabelTally(records, [], [] if sketch is None else [sketch])
            for _, _, records, sketch in grouped
        ]
        by_key = {(window, raw): tallies[n] for n, (window, raw, _, _) in enumerate(grouped)}
        if self._masker is not None:
            _attach_native_patterns(tallies, patterned, unmasked, self._masker, None, cuts)
        digests: dict[bytes, int] = {}
        for group, body in structured:
            digest = digests.get(body)
            if digest is None:
                digest = digests[body] = body_hash(body)
            window, raw = grouped[group][:2]
            by_key[window, raw].hashes.append(digest)
        return _windowed(by_key, labels, future, missing)

    def tally_keys(self, request: CheckedRequest, labels: LabelRenderer) -> list[Tally]:
        assert _wire is not None and request.scan is not None
        # One call for every key; a structured body is hashed, and a text masked in Python,
        # once whatever the keys.
        memo = _RequestMemo()
        return [
            # Every key's tally holds every record: the first's counts the cuts.
            _native_tally(
                tallied, labels, self._masker, self._final, memo, None if index else request.scan
            )
            for index, tallied in enumerate(_wire.tally_keys(request.scan))
        ]

    def tally_windows_keys(
        self, request: CheckedRequest, labels: LabelRenderer, arrival: int
    ) -> list[WindowedTally]:
        assert _wire is not None and request.scan is not None
        tallies = []
        for index in range(len(self.keys)):
            _wire.select_key(request.scan, index)
            cuts = None if index else request.scan
            tallies.append(self._tally_windows(request, labels, arrival, cuts))
        _wire.select_key(request.scan, 0)
        return tallies


class _RequestMemo:
    """What one request's tallies share across its keys: each structured body's digest, and
    each text or body Python patterned (see _attach_native_patterns)."""

    __slots__ = ("bodies", "digests", "masked")

    def __init__(self) -> None:
        self.digests: dict[bytes, int] = {}
        self.masked: dict[str, tuple[str, int]] = {}  # a text -> its pattern and cuts
        self.bodies: dict[bytes, BodyPattern] = {}


def _native_tally(
    tallied: tuple[
        list[tuple[bytes | None, int, bytes | None]],
        list[tuple[int, bytes]],
        list[list[PatternCount]],
        list[tuple[int, bytes, int]],
    ],
    labels: LabelRenderer,
    masker: Masker | None,
    final: bool,
    memo: _RequestMemo | None = None,
    cuts: CutCounter | None = None,
) -> Tally:
    """A Tally from _wire.tally's result (or one key's of _wire.tally_keys). `final`: the
    masker has no team's rules, so C's patterns are final for the bodies it masked. `memo`:
    what the request's other keys already hashed and masked (made here when needed). `cuts`
    counts the records whose text Python masked and cut (C counted its own in check)."""
    grouped, structured, patterned, unmasked = tallied
    if final and not unmasked:
        # The usual case: C made each value's patterns final, in the shape they are kept.
        by_raw = {
            raw: LabelTally(records, [], [] if sketch is None else [sketch], patterns)
            # Not strict: C gives one list per group, and zip's keyword costs a parse per call.
            for (raw, records, sketch), patterns in zip(grouped, patterned)  # noqa: B905
        }
    else:
        by_raw = {
            raw: LabelTally(records, [], [] if sketch is None else [sketch])
            for raw, records, sketch in grouped
        }
        if masker is not None:
            tallies = [by_raw[raw] for raw, _, _ in grouped]
            _attach_native_patterns(tallies, patterned, unmasked, masker, memo, cuts)
    if not structured:
        return by_label(by_raw, labels)
    # Bodies that are not plain strings are hashed canonically, as body_hash does, once per
    # distinct body: records without a body (an empty one) can be a whole request.
    digests = {} if memo is None else memo.digests
    for group, body in structured:
        digest = digests.get(body)
        if digest is None:
            digest = digests[body] = body_hash(body)
        by_raw[grouped[group][0]].hashes.append(digest)
    return by_label(by_raw, labels)


class ViewScanner:
    name = "python"

    def __init__(
        self,
        attribute_key: AttributeKeys,
        event_time: EventTime | None = None,
        masker: Masker | None = None,
    ) -> None:
        self.keys = _as_keys(attribute_key)
        self._key = self.keys[0]
        self._event_time = event_time
        self._masker = masker

    def check(self, wire: bytes) -> CheckedRequest:
        view = decode_view(wire)
        on_records = tuple(key_may_be_on_records(wire, view, key) for key in self.keys)
        return ViewCheckedRequest(
            wire,
            count_records(view),
            view=view,
            key_on_records=on_records[0],
            keys_on_records=on_records,
            cuts=None if self._masker is None else PatternCuts(),
        )

    @staticmethod
    def _cuts(request: CheckedRequest) -> PatternCuts | None:
        """Where the tally counts cuts: a request this scanner checked has its own."""
        return request.cuts if isinstance(request, ViewCheckedRequest) else None

    def tally(self, request: CheckedRequest, labels: LabelRenderer) -> Tally:
        view = request.view if request.view is not None else decode_view(request.wire)
        return tally_view(
            view, self._key, labels, request.key_on_records, self._masker, self._cuts(request)
        )

    def tally_windows(
        self, request: CheckedRequest, labels: LabelRenderer, arrival: int
    ) -> WindowedTally:
        assert self._event_time is not None
        view = request.view if request.view is not None else decode_view(request.wire)
        return tally_view_windows(
            view,
            self._key,
            labels,
            arrival,
            self._event_time,
            request.key_on_records,
            self._masker,
            self._cuts(request),
        )

    def tally_keys(self, request: CheckedRequest, labels: LabelRenderer) -> list[Tally]:
        if len(self.keys) == 1:
            return [self.tally(request, labels)]
        view = request.view if request.view is not None else decode_view(request.wire)
        columns = _key_columns(view, self.keys, _on_records(request, self.keys), times=False)
        bodies = columns.bodies
        hashes = [
            xxh3_64_intdigest(body) - SIGNED_OFFSET if body[:1] == STRING_TAG else body_hash(body)
            for body in bodies
        ]
        cache: dict[bytes, BodyPattern] = {}  # one body's pattern, whatever the key
        tallies = []
        for index, raws in enumerate(columns.raws):
            groups = _group(raws, hashes)
            if self._masker is not None:
                # Every key's tally holds every record: the first's counts the cuts.
                cuts = None if index else self._cuts(request)
                _attach_patterns(groups, raws, bodies, self._masker, cache, cuts)
            tallies.append(by_label(groups, labels))
        return tallies

    def tally_windows_keys(
        self, request: CheckedRequest, labels: LabelRenderer, arrival: int
    ) -> list[WindowedTally]:
        if len(self.keys) == 1:
            return [self.tally_windows(request, labels, arrival)]
        assert self._event_time is not None
        view = request.view if request.view is not None else decode_view(request.wire)
        columns = _key_columns(view, self.keys, _on_records(request, self.keys), times=True)
        cache: dict[bytes, BodyPattern] = {}
        return [
            _windowed_columns(
                raws,
                columns.bodies,
                columns.times,
                labels,
                arrival,
                self._event_time,
                self._masker,
                cache,
                None if index else self._cuts(request),
            )
            for index, raws in enumerate(columns.raws)
        ]


def _on_records(request: CheckedRequest, keys: tuple[str, ...]) -> tuple[bool, ...]:
    return request.keys_on_records or (True,) * len(keys)


def default_scanner(
    attribute_key: AttributeKeys,
    event_time: EventTime | None = None,
    masker: Masker | None = None,
) -> Scanner:
    """The C scanner when it was built, else the Python one; with a masker, both count each
    value's patterns (LabelTally.patterns)."""
    if NATIVE_AVAILABLE:
        return NativeScanner(attribute_key, event_time, masker)
    return ViewScanner(attribute_key, event_time, masker)


def tally_view(
    request: ExportLogsRequestView,
    key: str,
    labels: LabelRenderer,
    key_on_records: bool = True,
    masker: Masker | None = None,
    cuts: CutCounter | None = None,
) -> Tally:
    """Per attribute value label, the message hash of each record of one request (and with a
    masker, its patterns; with `cuts`, its records whose pattern was cut counted there).

    This is the Python scanner's hot loop, run once per record, so it is written for CPython:
    the per-record steps are list comprehensions (attribute lookups are map lookups done in C),
    a string body is hashed from its raw bytes in place (messages.body_hash, inlined), and a
    value is rendered once per distinct raw value rather than once per record. When no record
    can carry the key (`key_on_records` False), the per-record lookup is skipped.
    """
    raws, bodies, _ = _columns(request, key, key_on_records, times=False)
    hashes = [
        xxh3_64_intdigest(body) - SIGNED_OFFSET if body[:1] == STRING_TAG else body_hash(body)
        for body in bodies
    ]
    groups = _group(raws, hashes)
    if masker is not None:
        _attach_patterns(groups, raws, bodies, masker, {}, cuts)
    return by_label(groups, labels)


def tally_view_windows(
    request: ExportLogsRequestView,
    key: str,
    labels: LabelRenderer,
    arrival: int,
    event_time: EventTime,
    key_on_records: bool = True,
    masker: Masker | None = None,
    cuts: CutCounter | None = None,
) -> WindowedTally:
    """tally_view by (window, label): each record's window from its time, as _wire.c does."""
    raws, bodies, times = _columns(request, key, key_on_records, times=True)
    return _windowed_columns(raws, bodies, times, labels, arrival, event_time, masker, {}, cuts)


def _windowed_columns(
    raws: list[bytes | None],
    bodies: list[bytes],
    times: list[int],
    labels: LabelRenderer,
    arrival: int,
    event_time: EventTime,
    masker: Masker | None,
    cache: dict[bytes, BodyPattern],
    cuts: CutCounter | None = None,
) -> WindowedTally:
    latest = arrival + event_time.max_skew_ns
    future = missing = 0
    by_key: dict[tuple[int, bytes | None], LabelTally] = {}
    keys: list[tuple[int, bytes | None]] = []
    for raw, body, time in zip(raws, bodies, times, strict=True):
        if time == 0:
            time = arrival
            missing += 1
        elif time > latest:
            time = arrival
            future += 1
        group = by_key.get((time // event_time.window_ns, raw))
        if group is None:
            group = by_key[time // event_time.window_ns, raw] = LabelTally()
        group.hashes.append(
            xxh3_64_intdigest(body) - SIGNED_OFFSET if body[:1] == STRING_TAG else body_hash(body)
        )
        group.records += 1
        if masker is not None:
            keys.append((time // event_time.window_ns, raw))
    if masker is not None:
        _attach_patterns(by_key, keys, bodies, masker, cache, cuts)
    return _windowed(by_key, labels, future, missing)


def _columns(
    request: ExportLogsRequestView, key: str, key_on_records: bool, times: bool
) -> tuple[list[bytes | None], list[bytes], list[int]]:
    """Per record, in order: its raw attribute value (record > scope > resource), its body's
    raw bytes and, when `times`, its time (time_unix_nano, else observed, else 0)."""
    raws: list[bytes | None] = []
    bodies: list[bytes] = []
    stamps: list[int] = []
    for resource_logs in request.resource_logs:
        resource_raw = resource_logs.resource.attributes.get(key)
        for scope_logs in resource_logs.scope_logs:
            scope_raw = scope_logs.scope.attributes.get(key, resource_raw)
            # One list of wrappers, walked several times: iterating the repeated field again
            # would build every record's wrapper again.
            records = list(scope_logs.log_records)
            if key_on_records:
                raws += [record.attributes.get(key, scope_raw) for record in records]
            else:
                raws += [scope_raw] * len(records)
            bodies += [record.body for record in records]
            if times:
                stamps += [r.time_unix_nano or r.observed_time_unix_nano for r in records]
    return raws, bodies, stamps


@dataclass
class _KeyColumns:
    raws: list[list[bytes | None]]  # per key, per record
    bodies: list[bytes]
    times: list[int]


def _key_columns(
    request: ExportLogsRequestView,
    keys: tuple[str, ...],
    on_records: tuple[bool, ...],
    times: bool,
) -> _KeyColumns:
    """_columns for several keys from one walk of the view: bodies and times once, and per
    key its raw values (record > scope > resource)."""
    columns = _KeyColumns([[] for _ in keys], [], [])
    for resource_logs in request.resource_logs:
        resource = resource_logs.resource.attributes
        resource_raws = [resource.get(key) for key in keys]
        for scope_logs in resource_logs.scope_logs:
            scope = scope_logs.scope.attributes
            records = list(scope_logs.log_records)
            for key, raws, inherited, on in zip(
                keys, columns.raws, resource_raws, on_records, strict=True
            ):
                scope_raw = scope.get(key, inherited)
                if on:
                    raws += [record.attributes.get(key, scope_raw) for record in records]
                else:
                    raws += [scope_raw] * len(records)
            columns.bodies += [record.body for record in records]
            if times:
                columns.times += [r.time_unix_nano or r.observed_time_unix_nano for r in records]
    return columns


def _windowed(
    by_key: dict[tuple[int, bytes | None], LabelTally],
    labels: LabelRenderer,
    future: int,
    missing: int,
) -> WindowedTally:
    by_window: dict[int, dict[bytes | None, LabelTally]] = {}
    for (window, raw), counted in by_key.items():
        by_window.setdefault(window, {})[raw] = counted
    windows = {window: by_label(by_raw, labels) for window, by_raw in by_window.items()}
    return WindowedTally(windows, future, missing)


def _attach_patterns(
    tallies: Mapping[K, LabelTally],
    keys: Iterable[K],
    bodies: Iterable[bytes],
    masker: Masker,
    cache: dict[bytes, BodyPattern],
    cuts: CutCounter | None,
) -> None:
    """The view scanner's patterns: each record's group key and body, in step."""
    groups = count_patterns(keys, bodies, masker, cache, cuts)
    for key in groups:
        tallies[key].patterns += groups.counts(key)


def _attach_native_patterns(
    tallies: list[LabelTally],
    patterned: list[list[PatternCount]],
    unmasked: list[tuple[int, bytes, int]],
    masker: Masker,
    memo: _RequestMemo | None = None,
    cuts: CutCounter | None = None,
) -> None:
    """The C scanner's patterns onto its groups' tallies (`patterned`: a list per group, in
    the groups' order). They are final already, unless a team's rules must mask their texts
    first or some records' bodies were left to Python (structured, not UTF-8): then they are
    merged here. `memo`: what the request's other keys already masked. `cuts`: where the
    records Python masked and cut are counted (C counted its own in check)."""
    if not unmasked and not masker.has_rules:
        for tally, counts in zip(tallies, patterned, strict=True):
            tally.patterns += counts
        return
    groups: PatternGroups[int] = PatternGroups()
    if memo is None:
        memo = _RequestMemo()
    masked = memo.masked
    for group, counts in enumerate(patterned):
        for pattern, records, example in counts:
            if masker.has_rules:  # the C scanner gave the text itself
                final = masked.get(pattern)
                if final is None:
                    text, cut = masker.mask_cuts(pattern)
                    final = masked[pattern] = (text or EMPTY_PATTERN, cut)
                pattern = final[0]
                if cuts is not None and final[1]:
                    cuts.add_pattern_cuts(final[1], records)
            groups.add(group, pattern, records, example)
    mask = functools.partial(body_pattern_cuts, masker=masker)
    for group, body, records in unmasked:
        groups.add_masked(group, body, records, memo.bodies, mask, cuts)
    for group in groups:
        tallies[group].patterns += groups.counts(group)


def _group(raws: list[bytes | None], hashes: list[int]) -> dict[bytes | None, LabelTally]:
    distinct = set(raws)
    if len(distinct) == 1:  # one value for the whole request: the usual case
        return {distinct.pop(): LabelTally.of_hashes(hashes)}
    groups: dict[bytes | None, LabelTally] = {}
    for raw, digest in zip(raws, hashes, strict=True):
        group = groups.get(raw)
        if group is None:
            group = groups[raw] = LabelTally()
        group.hashes.append(digest)
        group.records += 1
    return groups


def by_label(by_raw: dict[bytes | None, LabelTally], labels: LabelRenderer) -> Tally:
    """Merge raw values that render alike (an int 7 and a string "7" are one label)."""
    tally: Tally = {}
    for raw, counted in by_raw.items():
        label = None if raw is None else labels.label(raw)
        if label in tally:
            tally[label].add(counted)
        else:
            tally[label] = counted
    return tally
