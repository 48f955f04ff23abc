"""A request counted but not made durable (--durability ack) is refused as retryable at both
doors: the sender keeps its copy and sends it again."""

from __future__ import annotations

import grpc

from otlp_stats.errors import NotDurable
from otlp_stats.receiving.grpc_receiver import grpc_status_for, retry_delay_of
from otlp_stats.receiving.http_receiver import http_status_for


def test_not_durable_is_unavailable_with_retry_info_and_503() -> None:
    refusal = NotDurable(retry_delay=1.5)
    assert grpc_status_for(refusal) is grpc.StatusCode.UNAVAILABLE
    assert retry_delay_of(refusal) == 1.5
    assert http_status_for(refusal) == 503
