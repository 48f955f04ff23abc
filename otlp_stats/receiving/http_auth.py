"""The admin port's edge of bearer-token authentication: an aiohttp middleware (the OTLP/HTTP
door checks tokens in LogsHttpReceiver.route, before it reads a body).

It runs before the handler, so a refused request's body is never read, let alone decoded.
Paths listed as open (the health probes) skip it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from otlp_stats.errors import Unauthenticated
from otlp_stats.receiving.auth import BearerTokens

# How the edge turns a refusal into its answer (OTLP/HTTP answers in the request's encoding).
Refuse = Callable[[Unauthenticated, web.Request], web.Response]


def token_middleware(
    tokens: BearerTokens, transport: str, refuse: Refuse, open_paths: Collection[str] = ()
) -> Middleware:
    @web.middleware
    async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in open_paths:
            return await handler(request)
        try:
            tokens.check(request.headers.get("Authorization"), transport)
        except Unauthenticated as refusal:
            response = refuse(refusal, request)
            # RFC 6750: a 401 names the scheme the client should use.
            response.headers["WWW-Authenticate"] = 'Bearer realm="otlp-stats"'
            return response
        return await handler(request)

    return require_token
