"""The admin HTTP port: Prometheus /metrics, liveness (/health, /livez) and readiness (/readyz)."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from otlp_stats.config import ListenAddress
from otlp_stats.health import Health


def build_admin_app(registry: CollectorRegistry, health: Health) -> web.Application:
    async def metrics(_: web.Request) -> web.Response:
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def live(_: web.Request) -> web.Response:
        status = 200 if health.live else 503
        return web.json_response({"status": health.state.value}, status=status)

    async def ready(_: web.Request) -> web.Response:
        status = 200 if health.ready else 503
        return web.json_response({"status": health.state.value}, status=status)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/health", live)
    app.router.add_get("/livez", live)
    app.router.add_get("/readyz", ready)
    return app


class HttpSite:
    """An aiohttp application on one listen address, with a start/stop lifecycle."""

    def __init__(
        self, app: web.Application, listen: ListenAddress, *, decompress_requests: bool = True
    ) -> None:
        # decompress_requests=False hands handlers the body as sent, Content-Encoding and all,
        # for a handler that must bound the decompressed size itself.
        self._runner = web.AppRunner(app, access_log=None, auto_decompress=decompress_requests)
        self._listen = listen
        self.port = 0

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._listen.host, self._listen.port)
        await site.start()
        # With port 0 the OS picks the port; the runner knows which one it got.
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        await self._runner.cleanup()
