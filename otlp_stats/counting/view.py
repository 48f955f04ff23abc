"""Decoding Export requests through the light view in proto/: only what counting needs."""

from __future__ import annotations

from google.protobuf.message import DecodeError

from otlp_stats._generated.otlp_stats_view.logs_view_pb2 import ExportLogsRequestView
from otlp_stats.errors import MalformedRequest

__all__ = [
    "ExportLogsRequestView",
    "count_records",
    "decode_view",
    "key_may_be_on_records",
]


def decode_view(payload: bytes) -> ExportLogsRequestView:
    """Parse a serialized ExportLogsServiceRequest as the view.

    This validates the request's structure down to the records; attribute values and bodies
    are kept as raw bytes and only decoded when a label must be rendered or a structured body
    canonicalized (see messages.body_hash for how bytes that are not an AnyValue are counted).
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


def key_may_be_on_records(wire: bytes, request: ExportLogsRequestView, key: str) -> bool:
    """False only when no log record can carry `key` as an attribute.

    Every KeyValue with this key puts the key's bytes in the payload. If the payload holds them
    no more often than the resources and scopes account for, no record has the key, and the
    worker can skip the per-record lookup (the costliest step per record). Extra occurrences
    anywhere (a body or value containing the key, duplicate keys) only make this answer True,
    the safe side. Only the key's bytes are searched, not the tag and length before them: a
    decoder accepts those in longer encodings than the shortest one. Real occurrences never
    overlap one another, and bytes.count finds the most non-overlapping occurrences there are,
    so it never counts fewer than the real ones.
    """
    found = wire.count(key.encode())
    if not found:
        return False
    above_records = 0
    for resource_logs in request.resource_logs:
        above_records += key in resource_logs.resource.attributes
        for scope_logs in resource_logs.scope_logs:
            above_records += key in scope_logs.scope.attributes
    return found > above_records
