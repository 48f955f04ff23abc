"""A record's pattern from its raw body, and a request's patterns per value: what both scanners
count when they are given a Masker (scan.py).

A body that is exactly one string field is its text, masked (invalid UTF-8 read as U+FFFD, so
patterns and examples are always valid str), with the text as example; one that masks to
nothing (empty, or only blanks) is `<empty>`. Any other body has its shape as pattern
(structured.value_pattern: a record without a body is `<null>`) and its rendering as a label
(resolve.render_value: compact JSON for kvlists and arrays) as example; bytes that are not an
AnyValue at all are `<undecodable>`, with an empty example.

message_patterns does the same for messages that are already text (replay's JSON frames), a
whole batch per key in one C call.

The masker's cuts (the token and length bounds a message's pattern was cut at) are counted per
record, into a CutCounter, by whoever tallies a request's records once (the first key's tally).
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from typing import Generic, TypeVar

from google.protobuf.message import DecodeError
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from otlp_stats.counting.messages import STRING_TAG
from otlp_stats.counting.resolve import render_value
from otlp_stats.patterns.masker import CUT_LENGTH, CUT_TOKENS, CutCounter, Masker
from otlp_stats.patterns.structured import NULL_PATTERN, value_pattern_cuts
from otlp_stats.patterns.tally import PatternCount

EMPTY_PATTERN = "<empty>"
UNDECODABLE_PATTERN = "<undecodable>"

K = TypeVar("K", bound=Hashable)
M = TypeVar("M", bound=Hashable)  # what is masked: a raw body, a message

try:
    from otlp_stats.patterns._masker import mask_groups as c_mask_groups
except ImportError:  # not built (no C compiler): message_patterns works in Python, same result
    HAVE_C_MASK_GROUPS = False
else:
    HAVE_C_MASK_GROUPS = True


def string_text(raw: bytes) -> bytes | None:
    """The text of a body that is exactly one string_value field (tag, length, text), else None.

    The C scanner masks these itself (when the text is valid UTF-8); the rest come here."""
    if raw[:1] != STRING_TAG:
        return None
    length, shift, at = 0, 0, 1
    while at < len(raw) and at <= 10:
        byte = raw[at]
        at += 1
        length |= (byte & 0x7F) << shift
        if byte < 0x80:
            return raw[at:] if length == len(raw) - at else None
        shift += 7
    return None


def body_pattern(raw: bytes, masker: Masker) -> tuple[str, str]:
    """(pattern, example) of a record's body, given as its raw AnyValue bytes."""
    pattern, example, _ = body_pattern_cuts(raw, masker)
    return pattern, example


# A body's (pattern, example, cuts): cuts as Masker.mask_cuts gives them.
BodyPattern = tuple[str, str, int]


def body_pattern_cuts(raw: bytes, masker: Masker) -> BodyPattern:
    """body_pattern's (pattern, example), and the bounds the masking was cut at."""
    text = string_text(raw)
    if text is not None:
        message = text.decode("utf-8", "replace")
        pattern, cuts = masker.mask_cuts(message)
        return pattern or EMPTY_PATTERN, message, cuts
    try:
        value = AnyValue.FromString(raw)
    except DecodeError:
        return UNDECODABLE_PATTERN, "", 0
    pattern, cuts = value_pattern_cuts(value, masker)
    return pattern or EMPTY_PATTERN, render_value(value), cuts


class PatternGroups(Generic[K]):
    """Per group (a value, or a (window, value)), its patterns: records add up, and the example
    kept is the smallest by UTF-8 bytes, as patterns/tally.py merges them."""

    def __init__(self) -> None:
        self._groups: dict[K, dict[str, list[int | str]]] = {}

    def add(self, key: K, pattern: str, records: int, example: str) -> None:
        patterns = self._groups.get(key)
        if patterns is None:
            patterns = self._groups[key] = {}
        known = patterns.get(pattern)
        if known is None:
            patterns[pattern] = [records, example]
            return
        known[0] = int(known[0]) + records
        # Valid str compare in the order of their UTF-8 bytes (patterns/tally.py).
        if example < str(known[1]):
            known[1] = example

    def add_masked(
        self,
        key: K,
        item: M,
        records: int,
        cache: dict[M, BodyPattern],
        mask: Callable[[M], BodyPattern],
        cuts: CutCounter | None,
    ) -> None:
        """`records` of `item` (a raw body, a message) under `key`: masked once per distinct
        item through `cache`, the records cut counted in `cuts`."""
        found = cache.get(item)
        if found is None:
            found = cache[item] = mask(item)
        self.add(key, found[0], records, found[1])
        if cuts is not None and found[2]:
            cuts.add_pattern_cuts(found[2], records)

    def counts(self, key: K) -> list[PatternCount]:
        patterns = self._groups.get(key, {})
        return [PatternCount(p, int(records), str(ex)) for p, (records, ex) in patterns.items()]

    def __iter__(self) -> Iterator[K]:
        """The groups, in the order their first pattern came."""
        return iter(self._groups)


def count_patterns(
    keys: Iterable[K],
    bodies: Iterable[bytes],
    masker: Masker,
    cache: dict[bytes, BodyPattern],
    cuts: CutCounter | None = None,
) -> PatternGroups[K]:
    """Per key, the patterns of its records (key and raw body per record, in step); `cache`
    keeps each distinct body's (pattern, example, cuts), and may be shared by several calls.
    With `cuts`, the records whose pattern was cut are counted there."""
    groups: PatternGroups[K] = PatternGroups()
    mask = functools.partial(body_pattern_cuts, masker=masker)
    for (key, body), records in Counter(zip(keys, bodies, strict=True)).items():
        groups.add_masked(key, body, records, cache, mask, cuts)
    return groups


Key = tuple[Hashable, ...]


def message_patterns(
    columns: Sequence[Sequence[Hashable]],
    messages: Sequence[str | None],
    masker: Masker,
    cuts: CutCounter | None = None,
) -> dict[Key, list[PatternCount]]:
    """Per key, the patterns of its records' messages: a record's key is the tuple of its values
    in `columns` (each column and `messages` in step, one value per record). A message is masked
    as a string body's text is (`<empty>` when nothing is left), None is `<null>` with an empty
    example, as a record without a body. Keys without records are absent.

    One C call for the batch (patterns/_masker.c) when the masker has only the built-in rules,
    no key tuple made per record; a team's rules are Python regexes, so with them each distinct
    message is masked from here. The records whose pattern was cut are counted in `cuts`."""
    if not HAVE_C_MASK_GROUPS or masker.has_rules:
        return message_patterns_python(columns, messages, masker, cuts)
    groups, tokens_cut, length_cut = c_mask_groups(
        columns, messages, masker.max_tokens, masker.max_length, PatternCount
    )
    if cuts is not None:
        if tokens_cut:
            cuts.add_pattern_cuts(CUT_TOKENS, tokens_cut)
        if length_cut:
            cuts.add_pattern_cuts(CUT_LENGTH, length_cut)
    return groups


def message_patterns_python(
    columns: Sequence[Sequence[Hashable]],
    messages: Sequence[str | None],
    masker: Masker,
    cuts: CutCounter | None = None,
) -> dict[Key, list[PatternCount]]:
    """message_patterns in Python, one masker call per distinct message: the reference the C
    path is held equal to, and the path with a team's rules."""
    cache: dict[str | None, BodyPattern] = {}
    groups: PatternGroups[Key] = PatternGroups()
    keys = zip(*columns, strict=True)
    mask = functools.partial(_message_pattern, masker=masker)
    # Records repeat: each distinct (key, message) is masked and added once.
    for (key, message), records in Counter(zip(keys, messages, strict=True)).items():
        groups.add_masked(key, message, records, cache, mask, cuts)
    return {key: groups.counts(key) for key in groups}


def _message_pattern(message: str | None, masker: Masker) -> tuple[str, str, int]:
    if message is None:
        return NULL_PATTERN, "", 0
    pattern, cut = masker.mask_cuts(message)
    return pattern or EMPTY_PATTERN, message, cut
