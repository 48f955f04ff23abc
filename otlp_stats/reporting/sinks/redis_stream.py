"""redis-stream:// (rediss-stream:// over TLS) host:port/db?stream=NAME&maxlen=N: each report one
XADD entry, field `report`."""

from __future__ import annotations

import redis
import redis.asyncio

from otlp_stats.reporting.sinks.base import Refused, RetryLater, SinkReport
from otlp_stats.reporting.sinks.uri import RedisStreamSpec

_TIMEOUT = 5.0


class RedisStream:
    def __init__(self, spec: RedisStreamSpec) -> None:
        self._spec = spec
        self._client: redis.asyncio.Redis | None = None

    async def open(self) -> None:
        # Connects on first use: a Redis down at start is a retry, not a failed start.
        self._client = redis.asyncio.Redis.from_url(
            self._spec.url, socket_timeout=_TIMEOUT, socket_connect_timeout=_TIMEOUT
        )

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def deliver(self, item: SinkReport) -> None:
        assert self._client is not None, "deliver before open"
        try:
            # MAXLEN ~ N: Redis trims whole nodes only, far cheaper than an exact trim.
            await self._client.xadd(
                self._spec.stream,
                {"report": item.line, "idempotency_key": item.idempotency_key},
                maxlen=self._spec.maxlen,
                approximate=True,
            )
        except (redis.ConnectionError, redis.TimeoutError, OSError) as error:
            raise RetryLater(f"redis: {error}") from None
        except redis.ResponseError as error:
            # WRONGTYPE, or an ACL refusal: the same command fails the same way again.
            raise Refused(f"redis: {error}") from None
