"""Request bodies the a2a-sdk routes would answer with an internal error are refused here first, as the client's
mistake: bytes that are not UTF-8, JSON with NaN/Infinity or integers past Python's digit limit, nesting too deep
to decode. JSON-RPC (at `/` and `/agents/{name}/`) gets -32700 (parse error); the HTTP+JSON routes get 400 in
their error format. Bodies that are valid JSON pass untouched (and empty bodies too: some routes take none)."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from mesh_coordinator.guard import BodyTooLargeError, json_reply

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

JSONRPC_PATH = "/"
_AGENT_JSONRPC_PATH = re.compile(r"^/agents/[^/]+/$")


def is_jsonrpc_path(path: str) -> bool:
    """The root's JSON-RPC URL, or one agent's (`/agents/{name}/`, mesh_coordinator.endpoints)."""
    return path == JSONRPC_PATH or _AGENT_JSONRPC_PATH.match(path) is not None


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def json_problem(body: bytes) -> str | None:
    """Why `body` is not strict JSON, or None when it is."""
    try:
        json.loads(body.decode("utf-8"), parse_constant=_no_constants)
    except (ValueError, RecursionError) as error:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return f"request body is not valid JSON: {type(error).__name__}: {str(error)[:200]}"
    return None


class StrictJsonBodies:
    """ASGI middleware: reads a request's body (bounded by the guard in front), checks it, and replays it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        try:
            body, pending = await read_body(receive)
        except BodyTooLargeError as error:
            await json_reply(send, 413, {"error": str(error)})
            return
        if pending is not None:  # the client went away mid-body: let the app see that
            await self.app(scope, replay_body(body, receive, pending), send)
            return
        problem = json_problem(body) if body.strip() else None
        if problem is None:
            await self.app(scope, replay_body(body, receive), send)
        elif is_jsonrpc_path(scope["path"]):
            await json_reply(send, 200, {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": problem}})
        else:
            await json_reply(send, 400, {"error": {"code": 400, "status": "INVALID_ARGUMENT", "message": problem}})


async def read_body(receive: Receive) -> tuple[bytes, Message | None]:
    """The whole request body, and the message that cut it short (a disconnect), if one did."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), message
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks), None


def replay_body(body: bytes, receive: Receive, pending: Message | None = None) -> Receive:
    """A receive that hands the app the body already read, then whatever the connection says next."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return pending if pending is not None else await receive()

    return replay
