"""An aiohttp application served on one listen address: the admin port (the OTLP/HTTP door has
its own server, http_server.py)."""

from __future__ import annotations

import ssl

from aiohttp import web

from otlp_stats.config import ListenAddress


class HttpSite:
    """An aiohttp application on one listen address, with a start/stop lifecycle."""

    def __init__(
        self,
        app: web.Application,
        listen: ListenAddress,
        *,
        decompress_requests: bool = True,
        ssl_context: ssl.SSLContext | None = None,
        idle_timeout: float = 75.0,
        reuse_port: bool = False,
    ) -> None:
        # decompress_requests=False hands handlers the body as sent, Content-Encoding and all,
        # for a handler that must bound the decompressed size itself.
        self._runner = web.AppRunner(
            app,
            access_log=None,
            auto_decompress=decompress_requests,
            keepalive_timeout=idle_timeout,
        )
        self._listen = listen
        self._ssl_context = ssl_context
        # SO_REUSEPORT: several serving processes share the port, the kernel spreads connections.
        self._reuse_port = reuse_port or None
        self.port = 0

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(
            self._runner,
            self._listen.host,
            self._listen.port,
            ssl_context=self._ssl_context,
            reuse_port=self._reuse_port,
        )
        await site.start()
        # With port 0 the OS picks the port; the runner knows which one it got.
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        await self._runner.cleanup()
