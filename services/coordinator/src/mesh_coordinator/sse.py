"""A Server-Sent Events response written straight to ASGI, for the fast path's streams.

Why not sse_starlette's EventSourceResponse (which the a2a-sdk routes use): per response it starts a task group of
four tasks (the stream, a ping, a shutdown listener, a disconnect listener) and opens a timeout scope around every
send; without them the coordinator's CPU per relayed task fell by about a quarter (docs/benchmarks.md, round
three). Here one watcher task per stream does what the mesh needs of the rest: it ends the stream when the client
goes away and sends a comment line when the stream has been quiet for PING_SECONDS, so proxies keep an idle
connection open. The server's own graceful shutdown ends open streams the way it ends any other response."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable

from mesh_coordinator.bodies import Receive, Scope, Send

PING_SECONDS = 15.0
"""A comment line after this long without an event (sse_starlette's default interval)."""

HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-store"),
    (b"connection", b"keep-alive"),
    (b"x-accel-buffering", b"no"),  # nginx: pass events through as they come
]
PING = b": ping\r\n\r\n"


def event(data: str, name: str | None = None) -> bytes:
    """One event, CRLF-separated as sse_starlette writes them; `data` must be one line (compact JSON is)."""
    head = f"event: {name}\r\n" if name else ""
    return f"{head}data: {data}\r\n\r\n".encode()


class LastEvent(bytes):
    """An encoded event known to end its stream (a task's final state): sent with the end of the response, so the
    server writes both at once and the client reads them at once, rather than the end alone after it."""


class EventStreamResponse:
    """An ASGI response: `events` (each already encoded) as a 200 text/event-stream, ended after a LastEvent or
    when `events` ends. When the client disconnects, `on_disconnect` is called and must make `events` end; sends
    after a disconnect would go nowhere."""

    def __init__(self, events: AsyncGenerator[bytes], on_disconnect: Callable[[], None]) -> None:
        self.events = events
        self.on_disconnect = on_disconnect
        self._last_sent = 0.0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        loop = asyncio.get_running_loop()
        await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
        self._last_sent = loop.time()
        watcher = asyncio.create_task(self._watch(receive, send))
        try:
            async for chunk in self.events:
                last = isinstance(chunk, LastEvent)
                await send({"type": "http.response.body", "body": chunk, "more_body": not last})
                self._last_sent = loop.time()
                if last:
                    return
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            await self.events.aclose()  # a stream left after its last event runs its cleanup now

    async def _watch(self, receive: Receive, send: Send) -> None:
        """Until the client goes away: a ping whenever the stream has been quiet for PING_SECONDS."""
        loop = asyncio.get_running_loop()
        while True:
            quiet_until = self._last_sent + PING_SECONDS
            try:
                message = await asyncio.wait_for(receive(), timeout=max(quiet_until - loop.time(), 0.0))
            except TimeoutError:
                if loop.time() >= self._last_sent + PING_SECONDS:  # no event went out meanwhile
                    await send({"type": "http.response.body", "body": PING, "more_body": True})
                    self._last_sent = loop.time()
                continue
            if message["type"] == "http.disconnect":
                self.on_disconnect()
                return
