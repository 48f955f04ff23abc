"""https://… (and http://): each report POSTed as JSON, headers from a file."""

from __future__ import annotations

import aiohttp

from otlp_stats.reporting.sinks.base import Refused, RetryLater, SinkReport
from otlp_stats.reporting.sinks.uri import WebhookSpec, redact


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After in seconds; its HTTP-date form is rare from webhooks and left to backoff."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


class Webhook:
    def __init__(self, spec: WebhookSpec) -> None:
        self._spec = spec
        self._session: aiohttp.ClientSession | None = None
        self._headers = {"Content-Type": "application/json", **dict(spec.headers)}

    async def open(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self._spec.timeout)
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def deliver(self, item: SinkReport) -> None:
        assert self._session is not None, "deliver before open"
        try:
            async with self._session.post(
                self._spec.url,
                data=item.line.encode("utf-8"),
                # The same key on every try and after a restart: the receiver dedupes by it.
                headers={**self._headers, "Idempotency-Key": item.idempotency_key},
            ) as response:
                status = response.status
                retry_after = retry_after_seconds(response.headers.get("Retry-After"))
                await response.read()
        except (aiohttp.ClientError, OSError, TimeoutError) as error:
            raise RetryLater(f"{redact(self._spec.url)}: {error!r}") from None
        if 200 <= status < 300:
            return
        if status == 429 or status >= 500:
            raise RetryLater(f"HTTP {status}", retry_after)
        raise Refused(f"HTTP {status} from {redact(self._spec.url)}")
