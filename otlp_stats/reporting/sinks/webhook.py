"""https://… (and http://): each report POSTed as JSON, headers from a file."""

from __future__ import annotations

from typing import Any

import aiohttp

from otlp_stats.reporting.sinks.base import Refused, RetryLater, SinkReport
from otlp_stats.reporting.sinks.uri import WebhookSpec, for_log


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After in seconds; its HTTP-date form is rare from webhooks and left to backoff."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


async def post_once(
    session: aiohttp.ClientSession,
    url: str,
    shown: str,
    data: bytes,
    headers: dict[str, str],
    ssl: Any = True,
) -> None:
    """One POST, judged as OTLP/HTTP and webhooks alike: 2xx delivered; 429, 5xx and a
    connection error retried (Retry-After honoured); any other status refused. `shown` names
    the target in errors without its secrets."""
    try:
        async with session.post(url, data=data, headers=headers, ssl=ssl) as response:
            status = response.status
            retry_after = retry_after_seconds(response.headers.get("Retry-After"))
            await response.read()
    except (aiohttp.ClientError, OSError, TimeoutError) as error:
        raise RetryLater(f"{shown}: {error!r}") from None
    if 200 <= status < 300:
        return
    if status == 429 or status >= 500:
        raise RetryLater(f"HTTP {status}", retry_after)
    raise Refused(f"HTTP {status} from {shown}")


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
        await post_once(
            self._session,
            self._spec.url,
            for_log(self._spec.url),
            item.line.encode("utf-8"),
            # The same key on every try and after a restart: the receiver dedupes by it.
            {**self._headers, "Idempotency-Key": item.idempotency_key},
        )
