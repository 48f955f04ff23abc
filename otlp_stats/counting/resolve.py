"""Attribute precedence (log record > scope > resource) and AnyValue rendering; pure functions."""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Iterable

import xxhash
from google.protobuf.message import DecodeError
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from otlp_stats.counting.messages import is_plain_string

JsonValue = None | bool | int | float | str | list["JsonValue"] | dict[str, "JsonValue"]


def find_attribute(attributes: Iterable[KeyValue], key: str) -> AnyValue | None:
    """The value of `key`, or None when absent.

    OTLP requires unique keys but does not say which duplicate wins; we take the last, as a
    protobuf map would, so every decoder of ours agrees.
    """
    found: AnyValue | None = None
    for attribute in attributes:
        if attribute.key == key:
            found = attribute.value
    return found


def resolve_attribute(
    key: str,
    record: Iterable[KeyValue],
    scope: Iterable[KeyValue],
    resource: Iterable[KeyValue],
) -> AnyValue | None:
    """The record's own attribute wins, else its scope's, else its resource's."""
    for attributes in (record, scope, resource):
        value = find_attribute(attributes, key)
        if value is not None:
            return value
    return None


def render_value(value: AnyValue) -> str:
    """A label for an attribute value.

    Strings as they are, ints in decimal, bools as true/false, doubles as the shortest
    round-trip decimal, bytes as base64, arrays and kvlists as compact canonical JSON (keys
    sorted). A value with nothing set renders as "", as the Collector's AsString does.
    """
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "int_value":
        return str(value.int_value)
    if kind == "bool_value":
        return "true" if value.bool_value else "false"
    if kind == "double_value":
        return render_double(value.double_value)
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    if kind in ("array_value", "kvlist_value"):
        return json.dumps(
            to_json_value(value), separators=(",", ":"), sort_keys=True, ensure_ascii=False
        )
    return ""


def render_double(number: float) -> str:
    """Shortest round-trip decimal; non-finite values as the protobuf JSON mapping spells them."""
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "Infinity" if number > 0 else "-Infinity"
    return repr(number)


def to_json_value(value: AnyValue) -> JsonValue:
    """The plain JSON form of an AnyValue: kvlists become objects, the last duplicate key wins."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "int_value":
        return value.int_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "double_value":
        return value.double_value
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    if kind == "array_value":
        return [to_json_value(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return {entry.key: to_json_value(entry.value) for entry in value.kvlist_value.values}
    return None


def render_raw(raw: bytes) -> str:
    """render_value of an AnyValue given as its raw encoding, as the view delivers it.

    The view does not validate attribute values: a string with invalid UTF-8 renders with
    U+FFFD in place of the bad bytes, and bytes that are no AnyValue at all render as base64.
    """
    try:
        return render_value(AnyValue.FromString(raw))
    except DecodeError:
        if is_plain_string(raw):
            header = len(raw) - _string_length(raw)
            return raw[header:].decode("utf-8", errors="replace")
        return base64.b64encode(raw).decode("ascii")


def _string_length(raw: bytes) -> int:
    length, shift = 0, 0
    for byte in raw[1:11]:
        length |= (byte & 0x7F) << shift
        if byte < 0x80:
            break
        shift += 7
    return length


class LabelRenderer:
    """Raw attribute value -> label, cached (a service has few distinct values), bounded.

    A label longer than `max_length` characters keeps its first `max_length` characters and
    gets a hash of the whole value appended, so long values stay bounded in memory and in
    the report, and values that differ only after the cut stay apart.
    """

    def __init__(self, max_length: int = 1024, cache_entries: int = 65_536) -> None:
        self._max_length = max_length
        self._cache_entries = cache_entries
        self._cache: dict[bytes, str] = {}
        self.truncated = 0

    def label(self, raw: bytes) -> str:
        label = self._cache.get(raw)
        if label is None:
            label = self._render(raw)
            if len(self._cache) >= self._cache_entries:
                self._cache.clear()  # crude but bounded; values rarely churn this much
            self._cache[raw] = label
        return label

    def _render(self, raw: bytes) -> str:
        label = render_raw(raw)
        if len(label) <= self._max_length:
            return label
        self.truncated += 1
        digest = xxhash.xxh3_64_hexdigest(label.encode("utf-8", errors="surrogatepass"))
        return f"{label[: self._max_length]}…#{digest}"
