"""The admin HTTP port: Prometheus /metrics, liveness (/health, /livez) and readiness (/readyz)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from otlp_stats.health import Health

ReadyDetail = Callable[[], dict[str, str]]
_READY_DETAIL: web.AppKey[ReadyDetail] = web.AppKey("ready_detail")


def build_admin_app(registry: CollectorRegistry, health: Health) -> web.Application:
    async def metrics(_: web.Request) -> web.Response:
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def live(_: web.Request) -> web.Response:
        status = 200 if health.live else 503
        return web.json_response({"status": health.state.value}, status=status)

    async def ready(request: web.Request) -> web.Response:
        status = 200 if health.ready else 503
        detail = request.app.get(_READY_DETAIL)
        body = {"status": health.state.value, **(detail() if detail else {})}
        if health.unavailable is not None:
            body["exports"] = f"refused: {health.unavailable}"
        return web.json_response(body, status=status)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/health", live)
    app.router.add_get("/livez", live)
    app.router.add_get("/readyz", ready)
    return app


def add_ready_detail(app: web.Application, detail: ReadyDetail) -> None:
    """Extra fields for /readyz (a degraded shared store says so there)."""
    app[_READY_DETAIL] = detail


QueryAnswer = Callable[[Mapping[str, str]], Awaitable[tuple[int, dict[str, Any]]]]
DistinctAnswer = QueryAnswer


def add_distinct_route(app: web.Application, answer: QueryAnswer) -> None:
    """GET /v1/distinct: stored distinct counts per period (the logic lives in query.py)."""
    _add_query_route(app, "/v1/distinct", answer)


def add_patterns_route(app: web.Application, answer: QueryAnswer) -> None:
    """GET /v1/patterns: each value's top patterns over stored periods (pattern_query.py)."""
    _add_query_route(app, "/v1/patterns", answer)


def _add_query_route(app: web.Application, path: str, answer: QueryAnswer) -> None:
    async def query(request: web.Request) -> web.Response:
        status, body = await answer(request.query)
        return web.json_response(body, status=status)

    app.router.add_get(path, query)
