"""Throttling as a sender sees it: the SDK exporters retry what a full queue refused.

The service runs with room for one request and a worker that holds each request a while, so
concurrent exporters are refused (gRPC UNAVAILABLE with RetryInfo, HTTP 503 with Retry-After);
their retries must still deliver every record exactly once.
"""

from __future__ import annotations

import pytest

from tests.support.expected import ExpectedCounts, only_report, summary_of
from tests.support.sdk_senders import KEY, SdkSenders, flush_all_at_once
from tests.support.slowed_service import running_slowed_service
from tests.test_e2e_sdk import EXPORTERS

# Each request holds the only queue place this long. Refused senders retry together after the
# retry delay (whole seconds on HTTP), long after the hold has ended, so each wave of retries
# admits one more sender: four senders need at most four of the SDK's six attempts.
HOLD_SECONDS = 0.05
RETRY_DELAY = 0.25


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_sdk_retries_deliver_every_refused_record_exactly_once(transport: str) -> None:
    with running_slowed_service(
        HOLD_SECONDS, f"--attribute-key={KEY}", f"--retry-delay={RETRY_DELAY}", queue_size=1
    ) as service:
        # Four providers (two senders, each with a resource that has the attribute and one
        # that does not), each holding all its records in one batch until they all flush at
        # once: one export is admitted, the others are refused and retry.
        expected = ExpectedCounts()
        senders = [
            SdkSenders(lambda: EXPORTERS[transport](service, False), expected=expected)
            for _ in range(2)
        ]
        for number, sender in enumerate(senders):
            sender.emit_every_placement(records_per_placement=3, tag=f"sender {number}")
        flush_all_at_once(senders)
        refused = service.metric(
            "otlp_stats_export_refused_total", {"transport": transport, "reason": "queue_requests"}
        )
        assert refused is not None and refused >= 1, "the queue never refused: nothing retried"
        accepted = service.metric("otlp_stats_records_accepted_total", {"transport": transport})
        assert accepted == expected.records
        assert service.stop() == 0
        report = only_report(service.all_reports())
    assert summary_of(report) == expected.summary()
