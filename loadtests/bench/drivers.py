"""Closed-loop load drivers: `concurrency` workers each send one task, wait for its end, and send the next, until
a fixed number of tasks is done or a time limit passes. One client per transport, all on asyncio."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from a2amesh.binding import MeshRequester, RetryProfile
from a2amesh.settings import MqttSettings
from a2amesh.topics import AgentAddress
from loadtests.a2a import (
    A2A_HEADERS,
    COMPLETED,
    RpcError,
    SseParser,
    ends_stream,
    result_task,
    rpc,
    rpc_bytes,
    rpc_result,
    send_params,
    stream_state,
)
from loadtests.bench.floor import FloorClient

Call = Callable[[], Awaitable[None]]
TASK_TIMEOUT = 30.0


@dataclass
class LoadResult:
    """What one closed-loop run measured."""

    completed: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    error_samples: list[str] = field(default_factory=list)

    @property
    def tasks_per_second(self) -> float:
        return self.completed / self.seconds if self.seconds else 0.0


async def closed_loop(call: Call, *, tasks: int, concurrency: int, max_seconds: float) -> LoadResult:
    """Run `call` `tasks` times with `concurrency` in flight, stopping early after `max_seconds`."""
    result = LoadResult()
    issued = 0
    started = time.perf_counter()
    deadline = started + max_seconds

    async def worker() -> None:
        nonlocal issued
        while issued < tasks and time.perf_counter() < deadline:
            issued += 1
            begin = time.perf_counter()
            try:
                await asyncio.wait_for(call(), timeout=TASK_TIMEOUT)
            except Exception as error:  # counted and sampled; the run goes on
                result.errors += 1
                if len(result.error_samples) < 5:
                    result.error_samples.append(f"{type(error).__name__}: {error}"[:300])
                continue
            result.latencies_ms.append((time.perf_counter() - begin) * 1000)
            result.completed += 1

    await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
    result.seconds = time.perf_counter() - started
    return result


# -- the floor --------------------------------------------------------------------------------------------------
@contextlib.asynccontextmanager
async def floor_client(settings: MqttSettings, request_topic: str, text: str) -> AsyncIterator[Call]:
    """Raw request/reply: the same request bytes each time, done at the fourth reply."""
    payload = rpc_bytes("SendStreamingMessage", send_params(text, task_id=str(uuid.uuid4())), "floor")
    async with FloorClient(settings, request_topic) as client:

        async def call() -> None:
            await client.request(payload)

        yield call


# -- the binding (our MeshRequester), to an agent or a pool ------------------------------------------------------
@contextlib.asynccontextmanager
async def binding_client(settings: MqttSettings, topic: str, text: str, **metadata: Any) -> AsyncIterator[Call]:
    """SendStreamingMessage through MeshRequester to `topic`; a task counts when its stream ends COMPLETED."""
    requester = MeshRequester(
        settings,
        AgentAddress("acme", "default", f"bench-{secrets.token_hex(4)}"),
        RetryProfile(first_reply_timeout=TASK_TIMEOUT, stream_idle_timeout=TASK_TIMEOUT, attempts=1),
    )
    stop = asyncio.Event()
    link = asyncio.create_task(requester.run(stop))
    try:
        await asyncio.wait_for(requester.link.connected.wait(), timeout=10)

        async def call() -> None:
            params = send_params(text, task_id=str(uuid.uuid4()), **metadata)
            items = [item async for item in requester.request(topic, "SendStreamingMessage", params).items()]
            state = items[-1].state.value if items and items[-1].state else None
            if state != COMPLETED:
                raise RpcError(f"task ended {state}")

        yield call
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(link, timeout=5)


# -- HTTP (the coordinator, or the a2a-sdk peer) ---------------------------------------------------------------
async def stream_results(
    client: httpx.AsyncClient, body: dict[str, Any], headers: dict[str, str]
) -> AsyncIterator[dict[str, Any]]:
    """The JSON-RPC results of one SendStreamingMessage read over SSE, in order (RpcError on an HTTP error).
    Iterate it inside `contextlib.aclosing`, so that leaving at the terminal event closes the stream at once."""
    parser = SseParser()
    async with client.stream("POST", "/", json=body, headers=headers) as response:
        if response.status_code != 200:
            raise RpcError(f"HTTP {response.status_code}")
        async for chunk in response.aiter_raw():
            for event in parser.feed(chunk):
                yield rpc_result(event)


@contextlib.asynccontextmanager
async def http_client(
    url: str, text: str, concurrency: int, *, streaming: bool, api_key: str | None = None, **metadata: Any
) -> AsyncIterator[Call]:
    """A2A JSON-RPC over HTTP: SendStreamingMessage read over SSE to the terminal event, or blocking SendMessage."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    base = {**A2A_HEADERS, **({"Authorization": f"Bearer {api_key}"} if api_key else {})}
    async with httpx.AsyncClient(base_url=url, timeout=TASK_TIMEOUT, limits=limits) as client:

        async def call_streaming() -> None:
            body = rpc("SendStreamingMessage", send_params(text, **metadata))
            headers = {**base, "Accept": "text/event-stream"}
            async with contextlib.aclosing(stream_results(client, body, headers)) as results:
                async for result in results:
                    if ends_stream(result):
                        if stream_state(result) != COMPLETED:
                            raise RpcError(f"task ended {stream_state(result)}")
                        return
            raise RpcError("stream closed before the task ended")

        async def call_blocking() -> None:
            response = await client.post("/", json=rpc("SendMessage", send_params(text, **metadata)), headers=base)
            task = result_task(rpc_result(response.json()))
            state = task.get("status", {}).get("state") if task else None
            if state != COMPLETED:
                raise RpcError(f"task ended {state}")

        yield call_streaming if streaming else call_blocking
