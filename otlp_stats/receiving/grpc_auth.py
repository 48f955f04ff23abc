"""The gRPC edge of bearer-token authentication: a server interceptor.

It decides from the call's metadata alone, before the request message is read or decoded, and
answers UNAUTHENTICATED. Methods listed as open (the health service, for probes) skip it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from typing import Any, TypeAlias

import grpc

from otlp_stats.errors import Unauthenticated
from otlp_stats.receiving.auth import BearerTokens
from otlp_stats.receiving.grpc_receiver import grpc_status_for

# Strings, so the subscripts exist only for mypy: grpc's classes are not generic at runtime.
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
Continuation: TypeAlias = Callable[[grpc.HandlerCallDetails], Awaitable["Handler | None"]]


class TokenInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, tokens: BearerTokens, open_services: Collection[str]) -> None:
        self._tokens = tokens
        self._open_prefixes = tuple(f"/{service}/" for service in open_services)

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or method.startswith(self._open_prefixes):
            return handler
        metadata = handler_call_details.invocation_metadata
        authorization = next(
            (value for key, value in metadata or () if key == "authorization"), None
        )
        try:
            self._tokens.check(authorization if isinstance(authorization, str) else None, "grpc")
        except Unauthenticated as refusal:
            return _refusing_handler(handler, refusal)
        return handler


def _refusing_handler(
    handler: grpc.RpcMethodHandler[Any, Any], refusal: Unauthenticated
) -> grpc.RpcMethodHandler[Any, Any]:
    """A handler of the same shape that answers at once; no deserializer, so nothing is decoded."""
    code = grpc_status_for(refusal)
    message = str(refusal)

    async def refuse_unary(_request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        await context.abort(code, message)

    async def refuse_stream(_requests: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        await context.abort(code, message)

    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse_stream)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(refuse_stream)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(refuse_unary)
    return grpc.unary_unary_rpc_method_handler(refuse_unary)
