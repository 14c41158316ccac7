"""JSON-RPC SendMessage and SendStreamingMessage served straight from our models, ahead of the a2a-sdk routes.

Why not the SDK here: its routes turn every request into protobuf (ParseDict) and every stream event back into a
dict (MessageToDict), in pure Python, and the handler behind them must convert our models to protobuf first. For
a relayed task that is four conversions of each of its four events, about a third of the coordinator's CPU per
task (docs/benchmarks.md). Here an event goes from the agent's bytes to one validated model to JSON text, both
steps in pydantic's compiled core. The conformance suite shows that our JSON and the SDK's mean the same message.

Only well-formed requests of these two methods with `A2A-Version: 1.0` take this path. Anything else (other
methods and versions, a body our model refuses, batch requests) goes to the a2a-sdk routes untouched, so those
stay the reference for every error and edge case."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator
from typing import Any, Literal

from a2a.server.request_handlers.response_helpers import build_error_response
from a2a.utils import errors as sdk_errors
from pydantic import BaseModel, ConfigDict, StrictInt, StrictStr, ValidationError
from starlette.responses import JSONResponse, Response

from a2amesh.binding import RemoteError
from a2amesh.models import SendMessageRequest, StreamResponse
from mesh_coordinator import sse
from mesh_coordinator.bodies import ASGIApp, Receive, Scope, Send, is_jsonrpc_path, read_body, replay_body
from mesh_coordinator.endpoints import scope_endpoint
from mesh_coordinator.handler import MeshRequestHandler, sdk_error
from mesh_coordinator.live import LiveTask
from mesh_coordinator.router import Endpoint
from mesh_coordinator.sse import EventStreamResponse

log = logging.getLogger(__name__)

_VERSION_HEADER = b"a2a-version"
_FAST_VERSION = b"1.0"


class SendCall(BaseModel):
    """A JSON-RPC call of SendMessage or SendStreamingMessage, validated in one pass from the body's bytes."""

    model_config = ConfigDict(extra="ignore")

    jsonrpc: Literal["2.0"]
    id: StrictStr | StrictInt | None = None  # strict: `true` is not the id 1
    method: Literal["SendMessage", "SendStreamingMessage"]
    params: SendMessageRequest


def parse_send_call(body: bytes) -> SendCall | None:
    """The call, or None when this path should leave the request to the a2a-sdk routes."""
    try:
        return SendCall.model_validate_json(body)
    except (ValidationError, ValueError):
        return None


def rpc_result(request_id: str | int | None, result_json: str) -> str:
    """A JSON-RPC success response around a result that is already JSON text."""
    return f'{{"jsonrpc":"2.0","id":{json.dumps(request_id)},"result":{result_json}}}'


def rpc_error(request_id: str | int | None, error: Exception) -> dict[str, Any]:
    """A JSON-RPC error response as the a2a-sdk routes write it (any unexpected error is an internal error)."""
    if not isinstance(error, sdk_errors.A2AError):
        error = sdk_errors.InternalError(message=str(error))
    return build_error_response(request_id, error)


class FastSendPath:
    """ASGI middleware: serves the two send methods itself and passes everything else to `app`."""

    def __init__(self, app: ASGIApp, handler: MeshRequestHandler) -> None:
        self.app = app
        self.handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not _candidate(scope):
            await self.app(scope, receive, send)
            return
        body, pending = await read_body(receive)
        call = parse_send_call(body)
        replay = replay_body(body, receive, pending)
        if call is None:
            await self.app(scope, replay, send)
            return
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
        response = await self._answer(call, headers, scope_endpoint(scope))
        await response(scope, replay, send)

    async def _answer(self, call: SendCall, headers: dict[str, str], endpoint: Endpoint | None) -> ASGIApp:
        try:
            if call.method == "SendMessage":
                task = await self.handler.send(call.params, headers, endpoint)
                return Response(rpc_result(call.id, f'{{"task":{task.to_json()}}}'), media_type="application/json")
            live = await self.handler.start(call.params, headers, endpoint)
            queue = live.listen()  # listening before any await: no event can slip past
            events = _events(live, queue)
            first = await anext(events, None)  # as the SDK does: an error before the first event is a plain reply
        except Exception as error:
            if not isinstance(error, sdk_errors.A2AError):
                log.exception("%s failed", call.method)
            return JSONResponse(rpc_error(call.id, error))
        return EventStreamResponse(_frames(call.id, first, events), on_disconnect=lambda: live.release(queue))


def _candidate(scope: Scope) -> bool:
    """A JSON-RPC POST (at the root or one agent's endpoint) that declares A2A 1.0: the only requests this path
    may take."""
    if scope["type"] != "http" or scope["method"] != "POST" or not is_jsonrpc_path(scope["path"]):
        return False
    return any(name == _VERSION_HEADER and value.strip() == _FAST_VERSION for name, value in scope["headers"])


async def _events(live: LiveTask, queue: asyncio.Queue[object]) -> AsyncGenerator[StreamResponse]:
    """The task's events from `queue`; an agent's error arrives as the A2A error the HTTP face answers with."""
    try:
        async for item in live.events(queue):
            yield item
    except RemoteError as error:
        raise sdk_error(error) from None


async def _frames(
    request_id: str | int | None, first: StreamResponse | None, events: AsyncGenerator[StreamResponse]
) -> AsyncGenerator[bytes]:
    """Server-sent events, one JSON-RPC response each, the one that ends the stream (a final or interrupted state:
    the relay ends there) marked as the last; a failure mid-stream is a last `error` event."""
    try:
        item = first
        while item is not None:
            frame = sse.event(rpc_result(request_id, item.to_json()))
            if item.ends_stream:
                yield sse.LastEvent(frame)
                return
            yield frame
            item = await anext(events, None)
    except Exception as error:
        if not isinstance(error, sdk_errors.A2AError):
            log.exception("event stream failed")
        yield sse.event(json.dumps(rpc_error(request_id, error), ensure_ascii=False), name="error")
    finally:
        await events.aclose()  # stops listening at once, also when the last event ended the response
