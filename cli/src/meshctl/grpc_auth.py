"""A gRPC channel that presents the coordinator's API key on every call (`authorization: Bearer <key>` metadata,
what the coordinator's interceptor checks), for `meshctl --grpc`. grpc.aio takes one interceptor per call shape."""

from __future__ import annotations

from typing import Any

import grpc
import grpc.aio


def _with_key(details: grpc.aio.ClientCallDetails, key: str | None) -> grpc.aio.ClientCallDetails:
    if not key:
        return details
    metadata = grpc.aio.Metadata(*(details.metadata or ()), ("authorization", f"Bearer {key}"))
    return grpc.aio.ClientCallDetails(
        details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
    )


class _UnaryBearer(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, key: str | None) -> None:
        self.key = key

    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await continuation(_with_key(client_call_details, self.key), request)


class _StreamBearer(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, key: str | None) -> None:
        self.key = key

    async def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await continuation(_with_key(client_call_details, self.key), request)


def bearer_channel(target: str, key: str | None) -> grpc.aio.Channel:
    """A plaintext channel to `target` (host:port, as the card lists it) carrying the key."""
    return grpc.aio.insecure_channel(target, interceptors=[_UnaryBearer(key), _StreamBearer(key)])
