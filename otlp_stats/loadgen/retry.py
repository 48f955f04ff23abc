"""When to retry a refused Export and how long to wait, honouring google.rpc.RetryInfo."""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from google.protobuf.message import DecodeError
from google.rpc.error_details_pb2 import RetryInfo
from google.rpc.status_pb2 import Status

# The two "not now" answers of the OTLP spec: the server is throttling (UNAVAILABLE, also
# what a refused connection looks like) or out of a resource. Other codes are final.
RETRYABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})

# The Python SDK exporter reads this trailer; Go clients read RetryInfo from the status
# details. Servers are asked to send both, we accept either.
RETRY_INFO_TRAILER = "google.rpc.retryinfo-bin"
STATUS_DETAILS_TRAILER = "grpc-status-details-bin"

_FIRST_BACKOFF_SECONDS = 0.05
_MAX_BACKOFF_SECONDS = 1.0


def retry_delay(trailers: Iterable[tuple[str, str | bytes]], attempt: int) -> float:
    """The server's RetryInfo delay if it sent one, else exponential backoff from `attempt` 0."""
    server_delay = server_retry_delay(trailers)
    if server_delay is not None:
        return server_delay
    return float(min(_FIRST_BACKOFF_SECONDS * 2**attempt, _MAX_BACKOFF_SECONDS))


def server_retry_delay(trailers: Iterable[tuple[str, str | bytes]]) -> float | None:
    """Seconds from RetryInfo in either trailer; None when absent or unreadable."""
    found: float | None = None
    for key, value in trailers:
        if not isinstance(value, bytes):
            continue
        try:
            if key == RETRY_INFO_TRAILER:
                return _seconds(RetryInfo.FromString(value))
            if key == STATUS_DETAILS_TRAILER and found is None:
                found = _delay_from_status(Status.FromString(value))
        except DecodeError:
            continue
    return found


def _delay_from_status(status: Status) -> float | None:
    for detail in status.details:
        if detail.Is(RetryInfo.DESCRIPTOR):
            info = RetryInfo()
            detail.Unpack(info)
            return _seconds(info)
    return None


def _seconds(info: RetryInfo) -> float:
    return max(0.0, float(info.retry_delay.seconds) + float(info.retry_delay.nanos) / 1e9)
