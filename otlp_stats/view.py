"""Decoding Export requests through the light view in proto/: only what counting needs."""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.message import DecodeError

from otlp_stats._generated.otlp_stats_view.logs_view_pb2 import ExportLogsRequestView
from otlp_stats.errors import MalformedRequest

__all__ = [
    "DecodedRequest",
    "ExportLogsRequestView",
    "count_records",
    "decode_request",
    "decode_view",
]


@dataclass(frozen=True)
class DecodedRequest:
    """A request as the view, with the protobuf bytes it was decoded from."""

    view: ExportLogsRequestView
    wire: bytes


def decode_request(payload: bytes) -> DecodedRequest:
    """A protobuf request body: the payload is the wire."""
    return DecodedRequest(decode_view(payload), payload)


def decode_view(payload: bytes) -> ExportLogsRequestView:
    """Parse a serialized ExportLogsServiceRequest as the view.

    This validates the request's structure down to the records; attribute values and bodies
    are kept as raw bytes and only decoded when a label must be rendered or a structured body
    canonicalized (see workers.py for how bytes that are not a valid AnyValue are counted).
    """
    try:
        return ExportLogsRequestView.FromString(payload)
    except DecodeError as error:
        raise MalformedRequest(f"cannot decode ExportLogsServiceRequest: {error}") from None


def count_records(request: ExportLogsRequestView) -> int:
    return sum(
        len(scope_logs.log_records)
        for resource_logs in request.resource_logs
        for scope_logs in resource_logs.scope_logs
    )


def key_needle(key: str) -> bytes:
    """How a KeyValue with this key starts on the wire: tag of field 1, length, the key."""
    encoded = key.encode()
    return b"\x0a" + _varint(len(encoded)) + encoded


def key_may_be_on_records(wire: bytes, request: ExportLogsRequestView, key: str) -> bool:
    """False only when no log record can carry `key` as an attribute.

    Every KeyValue with this key puts its needle in the payload. If the payload holds no more
    needles than the resources and scopes account for, no record has the key, and the worker can
    skip the per-record lookup (the costliest step per record). Extra needles anywhere (a body
    that happens to contain the bytes, duplicate keys) only make this answer True, the safe side.
    Needles cannot overlap: a key never contains 0x0A (config.py refuses whitespace and control
    characters) and the length varint of a key of at most 255 bytes is never 0x0A after its first
    byte, so bytes.count counts every occurrence.
    """
    found = wire.count(key_needle(key))
    if not found:
        return False
    above_records = 0
    for resource_logs in request.resource_logs:
        above_records += key in resource_logs.resource.attributes
        for scope_logs in resource_logs.scope_logs:
            above_records += key in scope_logs.scope.attributes
    return found > above_records


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)
