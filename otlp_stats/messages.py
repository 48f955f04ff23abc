"""Message identity: a stable 64-bit hash of a log body, equal for bodies equal by value."""

from __future__ import annotations

import struct

import xxhash
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

# Separate seeds keep a string body and a structured body with the same encoding apart.
_STRING_SEED = 0
_STRUCTURED_SEED = 0x0715_5EED

_INT64 = struct.Struct(">q")
_DOUBLE = struct.Struct(">d")
_LENGTH = struct.Struct(">I")
_CANONICAL_NAN = _DOUBLE.pack(float("nan"))


def to_signed64(unsigned: int) -> int:
    """Map a 64-bit hash to int64: sketch libraries take signed 64-bit integers."""
    return unsigned - (1 << 64) if unsigned >= (1 << 63) else unsigned


def message_hash(body: AnyValue) -> int:
    """Hash of the body's value. Hashes are stable across processes (unlike `hash()`)."""
    if body.WhichOneof("value") == "string_value":
        return to_signed64(xxhash.xxh3_64_intdigest(body.string_value.encode(), _STRING_SEED))
    return to_signed64(xxhash.xxh3_64_intdigest(canonical_bytes(body), _STRUCTURED_SEED))


def canonical_bytes(value: AnyValue) -> bytes:
    """A type-tagged encoding equal for equal values: kvlist keys sorted, last duplicate wins."""
    parts: list[bytes] = []
    _encode(value, parts)
    return b"".join(parts)


def _encode(value: AnyValue, out: list[bytes]) -> None:
    kind = value.WhichOneof("value")
    if kind == "string_value":
        _encode_blob(b"S", value.string_value.encode(), out)
    elif kind == "bytes_value":
        _encode_blob(b"B", value.bytes_value, out)
    elif kind == "int_value":
        out.append(b"I" + _INT64.pack(value.int_value))
    elif kind == "bool_value":
        out.append(b"T" if value.bool_value else b"F")
    elif kind == "double_value":
        number = value.double_value
        # All NaNs are one value here, and 0.0 equals -0.0, as they do when compared.
        packed = _CANONICAL_NAN if number != number else _DOUBLE.pack(number + 0.0)
        out.append(b"D" + packed)
    elif kind == "array_value":
        items = value.array_value.values
        out.append(b"A" + _LENGTH.pack(len(items)))
        for item in items:
            _encode(item, out)
    elif kind == "kvlist_value":
        entries = {entry.key: entry.value for entry in value.kvlist_value.values}
        out.append(b"K" + _LENGTH.pack(len(entries)))
        for key in sorted(entries):
            _encode_blob(b"k", key.encode(), out)
            _encode(entries[key], out)
    else:
        out.append(b"N")


def _encode_blob(tag: bytes, data: bytes, out: list[bytes]) -> None:
    out.append(tag + _LENGTH.pack(len(data)))
    out.append(data)
