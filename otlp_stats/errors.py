"""What can go wrong with an Export, in transport-neutral terms.

Inner code raises these; each transport edge maps them to its status codes in one table.
"""

from __future__ import annotations


class ExportRefused(Exception):
    """Base of every refusal; `reason` labels the refusal metric."""

    reason = "refused"
    retryable = False


class MalformedRequest(ExportRefused):
    reason = "malformed"


class RequestTooLarge(ExportRefused):
    reason = "too_large"


class UnsupportedMediaType(ExportRefused):
    """A content type or content encoding the front door does not speak (only HTTP has these)."""

    reason = "unsupported_media_type"


class Overloaded(ExportRefused):
    """The queue is full: the sender should retry after `retry_delay` seconds."""

    retryable = True

    def __init__(self, reason: str, retry_delay: float) -> None:
        super().__init__(f"server overloaded ({reason}); retry after {retry_delay:g}s")
        self.reason = reason
        self.retry_delay = retry_delay


class ShuttingDown(ExportRefused):
    """Not serving (starting or draining): the sender should retry, here later or elsewhere."""

    reason = "not_serving"
    retryable = True

    def __init__(self, retry_delay: float) -> None:
        super().__init__("server is not accepting requests (starting or shutting down)")
        self.retry_delay = retry_delay


class NotDurable(ExportRefused):
    """Counted, but its counts could not be made durable (the journal's commit failed): the
    sender must not drop its copy, so it is told to retry (at-least-once, docs/storage.md)."""

    reason = "not_durable"
    retryable = True

    def __init__(self, retry_delay: float) -> None:
        super().__init__("the request's counts could not be saved; retry")
        self.retry_delay = retry_delay


class Unauthenticated(ExportRefused):
    """No valid bearer token. `reason` (missing, malformed, invalid) labels the auth metric.

    The message never quotes what the sender sent: a near-miss token is still a secret.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(f"authentication failed: {reason} bearer token")
        self.reason = reason


class RequestTimeout(ExportRefused):
    """The sender took longer than the read timeout to deliver its request body."""

    reason = "read_timeout"


class CountingFailed(ExportRefused):
    """The request could not be counted through a fault of ours (a bug, memory): the sender is
    told, so nothing it was told was accepted goes missing; retrying would likely fail again."""

    reason = "internal"
