"""The fast path's event stream over a real uvicorn server: events in order then the end of the response, pings
while the stream is quiet, and a client that goes away ends the stream's source."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx
import pytest

from a2amesh.runtime import http_server
from devstack.processes import free_port
from mesh_coordinator import sse
from mesh_coordinator.bodies import Receive, Scope, Send
from tests.conftest import eventually


class Source:
    """Events handed out on demand, and whether the response asked to stop."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.released = asyncio.Event()

    async def events(self) -> AsyncIterator[bytes]:
        while (item := await self.queue.get()) is not None:
            yield item

    def release(self) -> None:
        self.released.set()
        self.queue.put_nowait(None)


@contextlib.asynccontextmanager
async def serving(source: Source) -> AsyncIterator[str]:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await sse.EventStreamResponse(source.events(), source.release)(scope, receive, send)

    port = free_port()
    server = http_server(app, "127.0.0.1", port)
    serve = asyncio.create_task(server.serve())

    async def started() -> bool:
        return server.started

    await eventually(started, timeout=10, what="the server started")
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.should_exit = True
        await asyncio.wait_for(serve, timeout=10)


async def test_events_arrive_in_order_and_the_response_ends() -> None:
    source = Source()
    async with serving(source) as url, httpx.AsyncClient(timeout=10) as client:
        for data in ('{"n":1}', '{"n":2}'):
            source.queue.put_nowait(sse.event(data))
        source.queue.put_nowait(sse.event('{"n":3}', name="error"))
        source.queue.put_nowait(None)
        response = await client.get(url)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.text == 'data: {"n":1}\r\n\r\ndata: {"n":2}\r\n\r\nevent: error\r\ndata: {"n":3}\r\n\r\n'
    assert not source.released.is_set()


async def test_a_quiet_stream_is_pinged(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sse, "PING_SECONDS", 0.2)
    source = Source()
    async with (
        serving(source) as url,
        httpx.AsyncClient(timeout=10) as client,
        client.stream("GET", url) as response,
    ):
        chunks = response.aiter_raw()
        assert await asyncio.wait_for(anext(chunks), timeout=5) == sse.PING
        source.queue.put_nowait(sse.event("{}"))
        assert await asyncio.wait_for(anext(chunks), timeout=5) == b"data: {}\r\n\r\n"
        source.queue.put_nowait(None)


async def test_a_client_that_goes_away_releases_the_source() -> None:
    source = Source()
    async with serving(source) as url, httpx.AsyncClient(timeout=10) as client:
        async with client.stream("GET", url) as response:
            source.queue.put_nowait(sse.event("{}"))
            assert await asyncio.wait_for(anext(response.aiter_raw()), timeout=5) == b"data: {}\r\n\r\n"
        # the connection is closed; the response notices and ends the source's iteration
        await asyncio.wait_for(source.released.wait(), timeout=10)


async def test_the_last_event_goes_out_with_the_end_of_the_response() -> None:
    """A LastEvent is the response's last body message (not followed by an empty one), so the server writes the event
    and the end at once; the source is closed then, not left waiting for an end it would never be asked for."""
    closed = asyncio.Event()

    async def events() -> AsyncIterator[bytes]:
        try:
            yield sse.event('{"n":1}')
            yield sse.LastEvent(sse.event('{"n":2}'))
            yield sse.event('{"never":true}')
        finally:
            closed.set()

    sent: list[dict[str, object]] = []

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    async def receive() -> dict[str, object]:
        await asyncio.Event().wait()  # the client stays
        return {"type": "http.disconnect"}

    scope = {"type": "http", "method": "GET", "path": "/"}
    await asyncio.wait_for(sse.EventStreamResponse(events(), lambda: None)(scope, receive, send), timeout=10)
    bodies = [(message["body"], message["more_body"]) for message in sent if message["type"] == "http.response.body"]
    assert bodies == [(b'data: {"n":1}\r\n\r\n', True), (b'data: {"n":2}\r\n\r\n', False)]
    assert closed.is_set()


async def test_a_last_event_over_a_real_server_ends_the_response() -> None:
    source = Source()
    async with serving(source) as url, httpx.AsyncClient(timeout=10) as client:
        source.queue.put_nowait(sse.event('{"n":1}'))
        source.queue.put_nowait(sse.LastEvent(sse.event('{"n":2}')))
        response = await asyncio.wait_for(client.get(url), timeout=10)  # ends without the source's end marker
    assert response.text == 'data: {"n":1}\r\n\r\ndata: {"n":2}\r\n\r\n'
    assert not source.released.is_set()
