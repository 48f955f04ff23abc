"""JSON frames of any shape: distinct `--message-field` per `--value-field` per window.

Built for a million frames a second on one core: a batch of lines is parsed by one orjson call
(the lines joined into one array), each field is read by a list comprehension, and messages
are hashed as OTLP string bodies (messages.string_body_hashes), so a uid read here and the same
text sent as a log body are one message. A batch that does not parse as a whole is parsed line
by line, to name each malformed line and count the others.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import accumulate
from typing import Any, Literal

import orjson

from otlp_stats.counting.aggregator import LabelTally
from otlp_stats.counting.messages import body_hash, string_body, string_body_hashes
from otlp_stats.counting.record_patterns import Key, message_patterns
from otlp_stats.counting.resolve import LabelRenderer, render_double
from otlp_stats.counting.scan import Tally
from otlp_stats.patterns.masker import Masker, PatternCuts
from otlp_stats.patterns.tally import PatternCount

TimeUnit = Literal["auto", "s", "ms", "us", "ns"]
TIME_UNITS: tuple[TimeUnit, ...] = ("auto", "s", "ms", "us", "ns")
_NS_PER_UNIT = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}
# A number below each bound is read in that unit: 1e11 seconds is the year 5138, and 1e11
# milliseconds is 1973, so the magnitudes of plausible times do not overlap.
_MAGNITUDES = ((1e11, "s"), (1e14, "ms"), (1e17, "us"), (math.inf, "ns"))
# A record without a body in OTLP: the empty AnyValue.
_NO_MESSAGE = body_hash(b"")


@dataclass(frozen=True)
class FrameFields:
    """Where a frame holds its time, the counted attribute value and the message."""

    time: str
    value: str
    message: str
    unit: TimeUnit = "auto"


@dataclass
class FrameBatch:
    """A batch's records by window and label, the latest time read, and the lines refused."""

    windows: dict[int, Tally] = field(default_factory=dict)
    # Records whose window had closed by the time a line before them in the batch was read.
    late_windows: dict[int, Tally] = field(default_factory=dict)
    records: int = 0
    latest_ns: int = 0
    malformed: list[tuple[int, str]] = field(default_factory=list)
    # With a masker: the lines whose message's pattern was cut at a bound.
    cuts: PatternCuts = field(default_factory=PatternCuts)


def field_reader(path: str) -> Callable[[Any], Any]:
    """A dotted path's reader: `a.b` is `doc["a"]["b"]`, unless `doc` has the key `a.b` itself."""
    parts = path.split(".")
    if len(parts) == 1:
        return lambda doc: doc.get(path)

    def read(doc: Any) -> Any:
        if path in doc:
            return doc[path]
        for part in parts:
            if not isinstance(doc, dict):
                return None
            doc = doc.get(part)
        return doc

    return read


class FrameCounter:
    """Tallies batches of JSON lines by (window, value) with the scanners' hashes and labels."""

    def __init__(
        self,
        fields: FrameFields,
        window_ns: int,
        lateness_ns: int,
        labels: LabelRenderer,
        masker: Masker | None = None,
    ) -> None:
        self._fields = fields
        # With a masker, each (window, value) also gets its messages' patterns.
        self._masker = masker
        self._time = field_reader(fields.time)
        self._value = field_reader(fields.value)
        self._message = field_reader(fields.message)
        self._window_ns = window_ns
        self._lateness_ns = lateness_ns
        self._labels = labels

    def tally(self, first_line: int, lines: Sequence[bytes], latest_ns: int) -> FrameBatch:
        """Count a batch of lines, the first of them numbered `first_line`; `latest_ns` is the
        latest time read before it. A line is late by the same rule as a window closes: its
        window ended the lateness before the latest time read before it."""
        batch = FrameBatch(latest_ns=latest_ns)
        numbers = [n for n, line in enumerate(lines, first_line) if line.strip()]
        kept = [lines[n - first_line] for n in numbers]
        if not kept:
            return batch
        try:
            docs = orjson.loads(b"[" + b",".join(kept) + b"]")
        except orjson.JSONDecodeError:
            docs = None
        if docs is None or len(docs) != len(kept):
            # Two lines glued by a missing newline would parse as one: line by line, then.
            numbers, docs = self._parse_each(numbers, kept, batch)
        times = self._times(numbers, docs, batch)
        if len(times) != len(docs):  # some were refused: keep the others, in step
            good = {n for n, _ in times}
            docs = [doc for n, doc in zip(numbers, docs, strict=True) if n in good]
        self._count(docs, [ns for _, ns in times], batch)
        return batch

    def _parse_each(
        self, numbers: list[int], lines: list[bytes], batch: FrameBatch
    ) -> tuple[list[int], list[Any]]:
        parsed_numbers, docs = [], []
        for number, line in zip(numbers, lines, strict=True):
            try:
                docs.append(orjson.loads(line))
            except orjson.JSONDecodeError as error:
                batch.malformed.append((number, f"not JSON: {error}"))
                continue
            parsed_numbers.append(number)
        return parsed_numbers, docs

    def _times(
        self, numbers: list[int], docs: list[Any], batch: FrameBatch
    ) -> list[tuple[int, int]]:
        """Each frame's time in nanoseconds; frames without a usable one are refused."""
        if all(type(doc) is dict for doc in docs):
            raw = [self._time(doc) for doc in docs]
            unit = self._batch_unit(raw)
            if unit is not None:
                scale = _NS_PER_UNIT[unit]
                return list(zip(numbers, [int(t) * scale for t in raw], strict=True))
        else:
            raw = [self._time(doc) if type(doc) is dict else doc for doc in docs]
        times = []
        for number, doc, value in zip(numbers, docs, raw, strict=True):
            if type(doc) is not dict:
                batch.malformed.append((number, "not a JSON object"))
                continue
            try:
                times.append((number, self._to_ns(value)))
            except ValueError as error:
                batch.malformed.append((number, f"{self._fields.time}: {error}"))
        return times

    def _batch_unit(self, raw: list[Any]) -> str | None:
        """The one unit of a batch of integer times, or None to read them one by one."""
        if not all(type(t) is int for t in raw):
            return None
        if self._fields.unit != "auto":
            return self._fields.unit
        low, high = _unit_of(min(raw)), _unit_of(max(raw))
        return low if low == high and min(raw) > 0 else None

    def _to_ns(self, value: Any) -> int:
        if isinstance(value, bool) or value is None:
            raise ValueError("missing" if value is None else "not a time")
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                try:
                    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
                except ValueError:
                    raise ValueError(f"not a time: {value!r:.40}") from None
                if moment.tzinfo is None:
                    raise ValueError(f"a time without a zone: {value!r:.40}") from None
                return round(moment.timestamp() * 1e9)
        if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"not a time: {value!r:.40}")
        unit = self._fields.unit if self._fields.unit != "auto" else _unit_of(value)
        return (
            round(value * _NS_PER_UNIT[unit])
            if isinstance(value, float)
            else (value * _NS_PER_UNIT[unit])
        )

    def _count(self, docs: list[dict[str, Any]], times: list[int], batch: FrameBatch) -> None:
        if not docs:
            return
        window_ns = self._window_ns
        values = [_as_label_text(self._value(doc)) for doc in docs]
        texts = [self._message(doc) for doc in docs]
        hashes = string_body_hashes(
            [t.encode() if type(t) is str else _message_text(t) for t in texts]
        )
        if not all(type(t) is str for t in texts):
            hashes = [_NO_MESSAGE if t is None else h for t, h in zip(texts, hashes, strict=True)]
        windows = [ns // window_ns for ns in times]
        # The latest time read before each line; its window is closed once that passed the
        # window's end plus the lateness.
        before = list(accumulate([batch.latest_ns, *times[:-1]], max))
        closes = window_ns + self._lateness_ns
        if min(windows) * window_ns + closes <= before[-1]:  # else none can be late
            late = [w * window_ns + closes <= b for w, b in zip(windows, before, strict=True)]
        else:
            late = [False] * len(windows)
        groups: dict[tuple[bool, int, str | None], list[int]] = {}
        patterns = (
            self._patterns((late, windows, values), texts, batch.cuts)
            if self._masker is not None
            else None
        )
        for is_late, window, value, digest in zip(late, windows, values, hashes, strict=True):
            key = (is_late, window, value)
            group = groups.get(key)
            if group is None:
                groups[key] = [digest]
            else:
                group.append(digest)
        for (is_late, window, value), digests in groups.items():
            label = None if value is None else self._labels.label(string_body(value.encode()))
            target = batch.late_windows if is_late else batch.windows
            tally = target.setdefault(window, {})
            counted = LabelTally.of_hashes(digests)
            if patterns is not None:
                counted.patterns = patterns[(is_late, window, value)]
            if label in tally:
                tally[label].add(counted)
            else:
                tally[label] = counted
        batch.records += len(docs)
        batch.latest_ns = max(batch.latest_ns, max(times))

    def _patterns(
        self,
        columns: tuple[list[bool], list[int], list[str | None]],
        texts: list[Any],
        cuts: PatternCuts,
    ) -> dict[Key, list[PatternCount]]:
        """Per group, its messages' patterns: a frame's message is masked as a string body is
        (a non-string one as its label text; a frame without one is `<null>`, as a record
        without a body), the whole batch in one call. The lines whose pattern was cut are
        counted in `cuts`."""
        assert self._masker is not None
        messages = (
            texts if all(type(t) is str for t in texts) else [_frame_message(t) for t in texts]
        )
        return message_patterns(columns, messages, self._masker, cuts)


def _frame_message(value: Any) -> str | None:
    return value if type(value) is str else _as_label_text(value)


def _unit_of(value: float) -> str:
    return next(unit for bound, unit in _MAGNITUDES if abs(value) < bound)


def _as_label_text(value: Any) -> str | None:
    """A value as the label text an attribute of the same value renders as; null is absent."""
    if type(value) is str or value is None:
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return render_double(value)
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def _message_text(value: Any) -> bytes:
    text = _as_label_text(value)
    return b"" if text is None else text.encode()
