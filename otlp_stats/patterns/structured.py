"""Structured bodies (kvlist, array): the pattern is the shape, keys and value types.

`{"user": "bob", "took_ms": 31, "tags": ["a", "b"]}` -> `{tags:[<str>],took_ms:<int>,user:<str>}`:
keys sorted and the last duplicate winning, as message identity's canonical form has them
(counting/messages.py); an array is the set of its items' shapes, whatever its length; a key
holding a value (`user-8812`) is masked as a message's words are. Bounded in depth and keys,
and the whole shape in length as a message's pattern is: past `max_length` bytes of UTF-8 it is
cut there (not inside a character) and ends in `<*>`. value_pattern_cuts also says which of the
masker's bounds (tokens, length) the string, any key masked in it, or the shape was cut at.
"""

from __future__ import annotations

from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from otlp_stats.patterns.masker import CUT_LENGTH, MASK, Masker

MAX_DEPTH = 8
MAX_KEYS = 64
_SCALARS = {
    "int_value": "<int>",
    "double_value": "<double>",
    "bool_value": "<bool>",
    "bytes_value": "<bytes>",
}


# The shape of an AnyValue that holds nothing (a record without a body, a null in a kvlist).
NULL_PATTERN = "<null>"


def value_pattern(value: AnyValue, masker: Masker) -> str:
    """The body's pattern: a string's masked text, else its shape."""
    return value_pattern_cuts(value, masker)[0]


def value_pattern_cuts(value: AnyValue, masker: Masker) -> tuple[str, int]:
    """value_pattern's pattern, and the bounds its masking was cut at (masker.CUT_TOKENS,
    masker.CUT_LENGTH): a string's, or any of its keys'."""
    if value.WhichOneof("value") == "string_value":
        return masker.mask_cuts(value.string_value)
    cuts = _Cuts()
    shape = _shape(value, masker, 0, cuts)
    if len(shape) * 4 > masker.max_length:  # a str's UTF-8 takes at most 4 bytes a character
        encoded = shape.encode("utf-8", "surrogatepass")
        if len(encoded) > masker.max_length:
            # An array's items and the keys' shapes nest: only the whole shape's length bounds
            # it. Cut at a character's end, so that the pattern stays valid text.
            kept = encoded[: masker.max_length - len(MASK)].decode("utf-8", "ignore")
            return kept + MASK, cuts.bits | CUT_LENGTH
    return shape, cuts.bits


class _Cuts:
    """The bounds the masking of a shape's keys was cut at, gathered as they are masked."""

    __slots__ = ("bits",)

    def __init__(self) -> None:
        self.bits = 0


def _shape(value: AnyValue, masker: Masker, depth: int, cuts: _Cuts) -> str:
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return "<str>"
    if kind in _SCALARS:
        return _SCALARS[kind]
    if kind is None:
        return NULL_PATTERN
    if depth >= MAX_DEPTH:
        return MASK
    if kind == "array_value":
        items = sorted({_shape(item, masker, depth + 1, cuts) for item in value.array_value.values})
        return "[" + "|".join(items) + "]"
    entries = {entry.key: entry.value for entry in value.kvlist_value.values}
    shapes: dict[str, str] = {}
    for key in sorted(entries):
        # Masked keys may coincide (`user-1`, `user-2`): one entry, the last key's shape.
        masked, cut = masker.mask_cuts(key)
        cuts.bits |= cut
        shapes[masked] = _shape(entries[key], masker, depth + 1, cuts)
    fields = [f"{key}:{shape}" for key, shape in sorted(shapes.items())[:MAX_KEYS]]
    if len(shapes) > MAX_KEYS:
        fields.append(MASK)
    return "{" + ",".join(fields) + "}"
