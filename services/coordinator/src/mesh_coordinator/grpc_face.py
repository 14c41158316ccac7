"""The coordinator's gRPC binding (A2A §10): the a2a-sdk's GrpcHandler over the same MeshRequestHandler, on its own
port (MESH_GRPC_PORT). The root is the request without a `tenant`; an agent's endpoint is the request whose
`tenant` names it (each agent's card lists the gRPC interface with its name as tenant, and the SDK's client puts
it on every request). An interceptor demands the same API keys the HTTP guard does, as `authorization: Bearer` or
`x-api-key` metadata, and the server takes no message larger than the HTTP body limit."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

import grpc
import grpc.aio
from a2a.server.context import ServerCallContext
from a2a.server.request_handlers.grpc_handler import DefaultGrpcServerCallContextBuilder, GrpcHandler
from a2a.server.request_handlers.request_handler import RequestHandler
from a2a.types import a2a_pb2 as pb
from a2a.types import a2a_pb2_grpc
from a2a.utils import errors as sdk_errors

from a2amesh.settings import CoordinatorSettings
from mesh_coordinator.auth import Authenticator, current_principal
from mesh_coordinator.directory import DependencyError
from mesh_coordinator.handler import MeshRequestHandler
from mesh_coordinator.router import AgentOfflineError, MeshRouter, UnknownAgentError

log = logging.getLogger(__name__)

GRPC_STOP_GRACE = 5.0
"""Seconds open gRPC calls (streams) get to finish once the coordinator stops."""


class ApiKeyInterceptor(grpc.aio.ServerInterceptor):
    """Refuses (UNAUTHENTICATED) every call that presents no valid credential (an API key of the mesh, or a JWT of
    the configured issuer: the HTTP guard's Authenticator), before any handler runs."""

    def __init__(self, authenticator: Authenticator) -> None:
        self.authenticator = authenticator

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        metadata = {key.lower(): value for key, value in handler_call_details.invocation_metadata or ()}
        credential = presented_key(metadata)
        if credential and await self.authenticator.authenticate(credential) is not None:
            return await continuation(handler_call_details)
        handler = await continuation(handler_call_details)
        return _refusal(handler)


def presented_key(metadata: dict[str, Any]) -> str | None:
    """The API key in a call's metadata: `authorization: Bearer <key>` or `x-api-key: <key>`."""
    authorization = str(metadata.get("authorization", ""))
    if authorization[:7].lower() == "bearer " and authorization[7:].strip():
        return authorization[7:].strip()
    key = metadata.get("x-api-key")
    return str(key) if key else None


def _refusal(handler: grpc.RpcMethodHandler | None) -> grpc.RpcMethodHandler:
    """A handler of the same shape as the one asked for that only aborts with UNAUTHENTICATED."""

    async def unary(_request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, "an API key is required (authorization: Bearer)")

    async def streaming(_request: Any, context: grpc.aio.ServicerContext) -> AsyncGenerator[None]:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, "an API key is required (authorization: Bearer)")
        yield  # pragma: no cover - abort raises

    if handler is not None and handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(
            streaming, handler.request_deserializer, handler.response_serializer
        )
    deserializer = handler.request_deserializer if handler is not None else None
    serializer = handler.response_serializer if handler is not None else None
    return grpc.unary_unary_rpc_method_handler(unary, deserializer, serializer)


class MetadataContextBuilder(DefaultGrpcServerCallContextBuilder):
    """The SDK's call context, with the call's metadata as `headers` (what the HTTP routes put there), so the
    handler passes a caller's credentials on to the agents that ask for them, as it does over HTTP."""

    def build(self, context: grpc.aio.ServicerContext) -> ServerCallContext:
        call = super().build(context)
        metadata = context.invocation_metadata() or ()
        call.state["headers"] = {
            key.lower(): value if isinstance(value, str) else value.decode("latin-1") for key, value in metadata
        }
        return call


class TenantEndpoints(RequestHandler):
    """Pins a call whose `tenant` names an agent to that agent's endpoint (as `/agents/{name}` does over HTTP),
    then hands it to the mesh's handler; the tenant is the coordinator's routing, not passed on to the agent."""

    def __init__(self, handler: MeshRequestHandler, router: MeshRouter, authenticator: Authenticator) -> None:
        self.handler = handler
        self.router = router
        self.authenticator = authenticator

    async def _pin(self, params: Any, context: ServerCallContext) -> None:
        # the caller, as the HTTP guard sets it, so every task operation is scoped to its owner here too (each
        # gRPC call runs in a task of its own; the interceptor already refused calls without a valid credential)
        credential = presented_key(context.state.get("headers", {}))
        current_principal.set(await self.authenticator.authenticate(credential) if credential else None)
        name = context.tenant or getattr(params, "tenant", "")
        if hasattr(params, "tenant"):
            params.tenant = ""
        if not name:
            context.state["endpoint"] = None
            return
        try:
            context.state["endpoint"] = await self.router.endpoint(name)
        except UnknownAgentError as error:
            raise sdk_errors.InvalidParamsError(message=str(error)) from None
        except (AgentOfflineError, DependencyError) as error:
            raise sdk_errors.InternalError(message=str(error)) from None

    async def on_get_task(self, params: pb.GetTaskRequest, context: ServerCallContext) -> pb.Task | None:
        await self._pin(params, context)
        return await self.handler.on_get_task(params, context)

    async def on_list_tasks(self, params: pb.ListTasksRequest, context: ServerCallContext) -> pb.ListTasksResponse:
        await self._pin(params, context)
        return await self.handler.on_list_tasks(params, context)

    async def on_cancel_task(self, params: pb.CancelTaskRequest, context: ServerCallContext) -> pb.Task | None:
        await self._pin(params, context)
        return await self.handler.on_cancel_task(params, context)

    async def on_message_send(self, params: pb.SendMessageRequest, context: ServerCallContext) -> pb.Task | pb.Message:
        await self._pin(params, context)
        return await self.handler.on_message_send(params, context)

    async def on_message_send_stream(
        self, params: pb.SendMessageRequest, context: ServerCallContext
    ) -> AsyncGenerator[Any]:
        await self._pin(params, context)
        async for event in self.handler.on_message_send_stream(params, context):
            yield event

    async def on_subscribe_to_task(
        self, params: pb.SubscribeToTaskRequest, context: ServerCallContext
    ) -> AsyncGenerator[Any]:
        await self._pin(params, context)
        async for event in self.handler.on_subscribe_to_task(params, context):
            yield event

    async def on_create_task_push_notification_config(
        self, params: pb.TaskPushNotificationConfig, context: ServerCallContext
    ) -> pb.TaskPushNotificationConfig:
        await self._pin(params, context)
        return await self.handler.on_create_task_push_notification_config(params, context)

    async def on_get_task_push_notification_config(
        self, params: pb.GetTaskPushNotificationConfigRequest, context: ServerCallContext
    ) -> pb.TaskPushNotificationConfig:
        await self._pin(params, context)
        return await self.handler.on_get_task_push_notification_config(params, context)

    async def on_list_task_push_notification_configs(
        self, params: pb.ListTaskPushNotificationConfigsRequest, context: ServerCallContext
    ) -> pb.ListTaskPushNotificationConfigsResponse:
        await self._pin(params, context)
        return await self.handler.on_list_task_push_notification_configs(params, context)

    async def on_delete_task_push_notification_config(
        self, params: pb.DeleteTaskPushNotificationConfigRequest, context: ServerCallContext
    ) -> None:
        await self._pin(params, context)
        await self.handler.on_delete_task_push_notification_config(params, context)

    async def on_get_extended_agent_card(
        self, params: pb.GetExtendedAgentCardRequest, context: ServerCallContext
    ) -> pb.AgentCard:
        await self._pin(params, context)
        return await self.handler.on_get_extended_agent_card(params, context)


def grpc_server(
    handler: MeshRequestHandler, settings: CoordinatorSettings, authenticator: Authenticator
) -> grpc.aio.Server:
    """The gRPC server, not yet started, listening on MESH_HTTP_HOST:MESH_GRPC_PORT."""
    limit = settings.max_body_bytes
    server = grpc.aio.server(
        interceptors=[ApiKeyInterceptor(authenticator)],
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", 16 * limit),
            # gRPC shares ports by default (SO_REUSEPORT): a second process would silently take half the calls
            ("grpc.so_reuseport", 0),
        ],
    )
    servicer = GrpcHandler(
        TenantEndpoints(handler, handler.router, authenticator), context_builder=MetadataContextBuilder()
    )
    a2a_pb2_grpc.add_A2AServiceServicer_to_server(servicer, server)
    address = f"{settings.http_host}:{settings.grpc_port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as error:  # grpc's own "Failed to bind" (a port already taken)
        raise OSError(f"gRPC cannot listen on {address}: {error}") from None
    if bound == 0:
        raise OSError(f"gRPC cannot listen on {address}")
    return server


async def serve_grpc(server: grpc.aio.Server, stop: asyncio.Event) -> None:
    """Serve until `stop`, then let open calls finish within GRPC_STOP_GRACE seconds."""
    await server.start()
    try:
        await stop.wait()
    finally:
        await server.stop(GRPC_STOP_GRACE)
