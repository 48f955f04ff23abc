"""Message identity: a stable 64-bit hash of a log body, equal for bodies equal by value."""

from __future__ import annotations

import struct

import xxhash
from google.protobuf.message import DecodeError
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

# Separate seeds keep the three kinds of identity apart: a plain string body (hashed as its
# wire encoding), a structured body (hashed canonically), bytes that are not an AnyValue.
_STRING_SEED = 0
_STRUCTURED_SEED = 0x0715_5EED
_OPAQUE_SEED = 0x0BAD_B0D7

# AnyValue.string_value is field 1, length-delimited: tag byte 0x0A.
STRING_TAG = b"\x0a"

_INT64 = struct.Struct(">q")
_DOUBLE = struct.Struct(">d")
_LENGTH = struct.Struct(">I")
_CANONICAL_NAN = _DOUBLE.pack(float("nan"))


SIGNED_OFFSET = 1 << 63


def to_signed64(unsigned: int) -> int:
    """Map a 64-bit hash onto int64 (a plain offset: one subtraction on the hot path).

    datasketches' update() takes an int as int64; one at or above 2**63 would go through its
    float path and collide with others.
    """
    return unsigned - SIGNED_OFFSET


def body_hash(raw: bytes) -> int:
    """Hash of a body given as the raw bytes of its AnyValue encoding.

    A string body (nearly all logs) is hashed as it is on the wire: every encoder writes a
    string AnyValue as the tag, the length and the text, so equal strings are equal bytes.
    The check is only the first byte, the string field's tag (workers.py inlines this fast
    path); an encoding that starts with a string field and carries more fields, which no
    encoder writes, is therefore identified by its bytes. Anything else is decoded and hashed
    canonically. Bytes that are not a valid AnyValue (the view does not validate bodies) are
    counted by their bytes rather than refused after the request was acknowledged.
    """
    if raw[:1] == STRING_TAG:
        return xxhash.xxh3_64_intdigest(raw, _STRING_SEED) - SIGNED_OFFSET
    try:
        value = AnyValue.FromString(raw)
    except DecodeError:
        return to_signed64(xxhash.xxh3_64_intdigest(raw, _OPAQUE_SEED))
    return to_signed64(xxhash.xxh3_64_intdigest(canonical_bytes(value), _STRUCTURED_SEED))


def string_body(text: bytes) -> bytes:
    """The AnyValue encoding of a string body, given its UTF-8 text: tag, varint length, text."""
    length, prefix = len(text), bytearray(STRING_TAG)
    while length >= 0x80:
        prefix.append(length & 0x7F | 0x80)
        length >>= 7
    prefix.append(length)
    return bytes(prefix) + text


# The encoding's prefix for the short texts nearly every message is (one length byte).
_SHORT_PREFIXES = tuple(STRING_TAG + bytes((length,)) for length in range(0x80))


def string_body_hashes(texts: list[bytes]) -> list[int]:
    """body_hash of each UTF-8 text as a string body: the identity of a message read from JSON
    is that of the same text sent as an OTLP string body. Written for the JSON frames' hot loop."""
    prefixes = _SHORT_PREFIXES
    digest = xxhash.xxh3_64_intdigest
    return [
        digest(prefixes[len(text)] + text) - SIGNED_OFFSET
        if len(text) < 0x80
        else digest(string_body(text)) - SIGNED_OFFSET
        for text in texts
    ]


def message_hash(body: AnyValue) -> int:
    """Hash of a decoded body; equal to body_hash of its encoding."""
    return body_hash(body.SerializeToString())


def is_plain_string(raw: bytes) -> bool:
    """True when raw is exactly one string_value field: tag, varint length, that many bytes."""
    size = len(raw)
    if size < 2 or raw[:1] != STRING_TAG:
        return False
    if raw[1] < 0x80:  # bodies under 128 bytes: one length byte
        return raw[1] + 2 == size
    length, shift, position = 0, 0, 1
    while position < size and position <= 10:
        byte = raw[position]
        length |= (byte & 0x7F) << shift
        position += 1
        if byte < 0x80:
            return position + length == size
        shift += 7
    return False


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
