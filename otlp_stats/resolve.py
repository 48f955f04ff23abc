"""Attribute precedence (log record > scope > resource) and AnyValue rendering; pure functions."""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Iterable

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

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
