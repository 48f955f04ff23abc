"""The OTLP JSON encoding: ExportLogsServiceRequest from JSON, and messages back to JSON.

OTLP/JSON is the protobuf JSON mapping with two differences that `json_format` alone gets
wrong: trace and span ids are hex strings (the standard mapping reads bytes as base64), and
receivers must ignore fields they do not know (the standard parser rejects them).

Requests reach the counting stage as protobuf bytes. `json_to_wire` gets them in one C pass
(`_otlp_json.c`) for the requests it reads exactly as the reference path does, which is every
request an OTLP encoder writes; anything else, refusals included, takes the reference path
(`json.loads`, then `json_format`, then serialization), which gives the verdict and its reason.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from otlp_stats.errors import MalformedRequest

try:
    from otlp_stats.receiving._otlp_json import transcode
except ImportError:  # not built (no C compiler): the reference path alone, about 100x slower
    transcode = None  # type: ignore[assignment]

NATIVE_JSON_AVAILABLE = transcode is not None

# The request's path to its log records, under both spellings the mapping accepts.
_RESOURCE_LOGS = ("resourceLogs", "resource_logs")
_SCOPE_LOGS = ("scopeLogs", "scope_logs")
_LOG_RECORDS = ("logRecords", "log_records")
_HEX_IDS = ("traceId", "trace_id", "spanId", "span_id")


def json_to_wire(payload: bytes) -> bytes:
    """OTLP/JSON into the protobuf bytes of the same ExportLogsServiceRequest, or
    MalformedRequest with the reason."""
    wire = transcode_json(payload)
    return wire if wire is not None else reference_json_to_wire(payload)


def transcode_json(payload: bytes) -> bytes | None:
    """json_to_wire by the C transcoder alone, at under a microsecond a record; None where the
    reference path must decide (or the transcoder is not built)."""
    return transcode(payload) if transcode is not None else None


def reference_json_to_wire(payload: bytes) -> bytes:
    """json_to_wire through the full request the JSON mapping builds: the reference path."""
    return decode_json_request(payload).SerializeToString()


def decode_json_request(payload: bytes) -> ExportLogsServiceRequest:
    """Parse an OTLP/JSON ExportLogsServiceRequest; raise MalformedRequest with the reason."""
    try:
        document = json.loads(payload)
    except ValueError as error:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise MalformedRequest(f"request body is not JSON: {error}") from None
    except RecursionError:
        raise MalformedRequest("request body is JSON nested too deeply") from None
    if not isinstance(document, dict):
        raise MalformedRequest("request body must be a JSON object")
    _hex_ids_to_base64(document)
    request = ExportLogsServiceRequest()
    try:
        json_format.ParseDict(document, request, ignore_unknown_fields=True)
    except (json_format.ParseError, RecursionError) as error:
        raise MalformedRequest(f"cannot decode ExportLogsServiceRequest: {error}") from None
    except SystemError:
        # upb's lookup of a field name holding a lone surrogate (json.loads keeps "\ud83d")
        # fails with SystemError rather than ParseError: a bad request, not a server fault.
        raise MalformedRequest(
            "cannot decode ExportLogsServiceRequest: a key is not valid Unicode"
        ) from None
    return request


def encode_json(message: Message) -> bytes:
    """A message in OTLP/JSON (lowerCamelCase names, as the standard mapping writes them)."""
    return json_format.MessageToJson(message, indent=None).encode()


def encode_json_request(request: ExportLogsServiceRequest) -> bytes:
    """A request in OTLP/JSON, as an OTLP exporter writes it (hex trace and span ids)."""
    document = json_format.MessageToDict(request)
    for resource_logs in _members(document, _RESOURCE_LOGS):
        for scope_logs in _members(resource_logs, _SCOPE_LOGS):
            for record in _members(scope_logs, _LOG_RECORDS):
                for name in _HEX_IDS:
                    if name in record:
                        record[name] = base64.b64decode(record[name]).hex()
    return json.dumps(document, separators=(",", ":")).encode()


def _hex_ids_to_base64(document: dict[str, Any]) -> None:
    """Rewrite each log record's hex trace and span id in place as the base64 json_format reads.

    Anything not shaped like a request is left alone for json_format to report.
    """
    for resource_logs in _members(document, _RESOURCE_LOGS):
        for scope_logs in _members(resource_logs, _SCOPE_LOGS):
            for record in _members(scope_logs, _LOG_RECORDS):
                for name in _HEX_IDS:
                    value = record.get(name)
                    if isinstance(value, str):
                        record[name] = _hex_to_base64(name, value)


def _members(parent: dict[str, Any], names: tuple[str, ...]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for name in names:
        children = parent.get(name)
        if isinstance(children, list):
            found.extend(child for child in children if isinstance(child, dict))
    return found


def _hex_to_base64(name: str, value: str) -> str:
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise MalformedRequest(f"{name} must be a hex string, got {value!r:.80}") from None
    return base64.b64encode(raw).decode("ascii")
