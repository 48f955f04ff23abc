"""The straightforward model of counting: full OTLP decode, scan each KeyValue list.

Tests compare the service's fast path (the light view in proto/) against this.
"""

from __future__ import annotations

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from otlp_stats.messages import message_hash
from otlp_stats.resolve import find_attribute, render_value


def reference_tally(
    request: ExportLogsServiceRequest, key: str
) -> dict[str | None, tuple[set[int], int]]:
    """Per value label: the set of message hashes and the record count."""
    tallies: dict[str | None, tuple[set[int], int]] = {}
    for resource_logs in request.resource_logs:
        resource_value = find_attribute(resource_logs.resource.attributes, key)
        for scope_logs in resource_logs.scope_logs:
            scope_value = find_attribute(scope_logs.scope.attributes, key)
            for record in scope_logs.log_records:
                own = find_attribute(record.attributes, key)
                value = (
                    own
                    if own is not None
                    else scope_value
                    if scope_value is not None
                    else resource_value
                )
                label = None if value is None else render_value(value)
                hashes, records = tallies.get(label, (set(), 0))
                hashes.add(message_hash(record.body))
                tallies[label] = (hashes, records + 1)
    return tallies
