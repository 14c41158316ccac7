"""Push deliveries with two coordinator replicas (mesh_coordinator.push, mesh_taskstore.push): each config's updates
are POSTed by one replica at a time (a lease in the task store), so a real webhook receiver (uvicorn on loopback)
gets every update once and in order, however the replicas' polls interleave; and when the replica holding a lease
dies, the other takes the deliveries over once it expires, losing none."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import uvicorn
from a2a.client import A2ACardResolver, Client, ClientConfig, ClientFactory
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from devstack.processes import ManagedProcess, free_port
from devstack.stack import Ports, Stack
from tests.conftest import auth_headers, eventually, send_request, user_message

LEASE_SECONDS = 3
PUSH_ENV = {
    "MESH_PUSH_ALLOWED_NETWORKS": '["127.0.0.1/32"]',
    "MESH_PUSH_BACKOFF": "0.2",
    "MESH_PUSH_BACKOFF_MAX": "0.5",
    "MESH_PUSH_MAX_ATTEMPTS": "20",  # a receiver refusing for a few seconds is retried, never dead-lettered here
    "MESH_PUSH_LEASE_SECONDS": str(LEASE_SECONDS),
}


@dataclass
class SlowReceiver:
    """A webhook that takes its time over each POST (so two replicas' polls overlap any delivery) and can refuse
    every POST for a while (503): it records every POST it accepted, duplicates included."""

    url: str = ""
    accepting: bool = True
    delay: float = 0.3
    received: list[dict[str, Any]] = field(default_factory=list)

    def of(self, task_id: str) -> list[dict[str, Any]]:
        return [item for item in self.received if item["task_id"] == task_id]

    def completed(self, task_id: str) -> bool:
        return any(item["state"] == "TASK_STATE_COMPLETED" for item in self.of(task_id))


@pytest.fixture(scope="module")
def replicated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = Stack(
        run_dir=tmp_path_factory.mktemp("push-replicas"),
        ports=Ports.random(),
        agents={"echo": "agent_echo"},
        coordinators=2,
        extra_env=PUSH_ENV,
    )
    stack.start()
    yield stack
    stack.stop()


@pytest.fixture
async def receiver() -> AsyncIterator[SlowReceiver]:
    state = SlowReceiver()

    async def hook(request: Request) -> JSONResponse:
        await asyncio.sleep(state.delay)
        if not state.accepting:
            return JSONResponse({"error": "try later"}, status_code=503)
        body = await request.json()
        update = body.get("statusUpdate") or body.get("artifactUpdate") or body.get("task") or {}
        state.received.append(
            {
                "delivery_id": request.headers.get("x-a2a-delivery-id", ""),
                "task_id": update.get("taskId") or update.get("id"),
                "state": update.get("status", {}).get("state"),
                "body": body,
            }
        )
        return JSONResponse({"ok": True})

    port = free_port()
    app = Starlette(routes=[Route("/hook", hook, methods=["POST"])])
    server = uvicorn.Server(uvicorn.Config(app, "127.0.0.1", port, log_level="error"))
    serving = asyncio.create_task(server.serve())
    await eventually(lambda: asyncio.sleep(0, server.started), what="webhook receiver up")
    state.url = f"http://127.0.0.1:{port}/hook"
    yield state
    server.should_exit = True
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(serving, 10)


def replicas(stack: Stack) -> list[ManagedProcess]:
    return [stack.processes["coordinator"], stack.processes["coordinator-1"]]


@contextlib.asynccontextmanager
async def clients(stack: Stack, processes: list[ManagedProcess]) -> AsyncIterator[list[Client]]:
    """One a2a-sdk client per replica, from that replica's own card."""
    async with httpx.AsyncClient(timeout=60, headers=auth_headers(stack)) as http:
        made = []
        for process in processes:
            card = await A2ACardResolver(http, str(process.env["MESH_PUBLIC_URL"])).get_agent_card()
            made.append(ClientFactory(ClientConfig(httpx_client=http, streaming=False)).create(card))
        yield made


async def slow_task_with_a_hook(client: Client, url: str, delay_ms: int) -> str:
    """A task started at once, with a push config made as it starts (SendMessage's own): every update goes out."""
    request = send_request(user_message("push me"), skill="echo", return_immediately=True, delayMs=delay_ms)
    config = request.configuration.task_push_notification_config
    config.url, config.token, config.id = url, "tok", "hook"
    async for event in client.send_message(request):
        return event.task.id
    raise AssertionError("no task came back")


def stored_events(stack: Stack, task_id: str) -> list[dict[str, Any]]:
    return httpx.get(f"{stack.taskstore_url}/tasks/{task_id}/events", params={"scope": "all"}).json()["events"]


def lease_holder(stack: Stack, task_id: str) -> str | None:
    """Who holds the task's delivery lease now, read from the task store's database (SQLite, read-only)."""
    with contextlib.closing(sqlite3.connect(f"file:{stack.run_dir / 'taskstore.db'}?mode=ro", uri=True)) as db:
        row = db.execute("SELECT holder FROM push_lease WHERE task_id = ?", (task_id,)).fetchone()
    return row[0] if row else None


def assert_every_update_once_in_order(stack: Stack, receiver: SlowReceiver, task_id: str) -> None:
    """Every recorded update of the task (its config came with the message), POSTed exactly once, in order."""
    stored = [event["event"] for event in stored_events(stack, task_id)]
    got = receiver.of(task_id)
    positions = [stored.index(item["body"]) for item in got]
    assert len({item["delivery_id"] for item in got}) == len(got), f"an update was POSTed twice: {positions}"
    assert positions == list(range(len(stored))), f"missing or out of order: {positions}"


async def test_two_replicas_post_every_update_once_and_in_order(replicated: Stack, receiver: SlowReceiver) -> None:
    async with clients(replicated, replicas(replicated)) as (first, second):
        tasks = [await slow_task_with_a_hook(client, receiver.url, 1_500) for client in (first, second, first, second)]
        for task_id in tasks:
            await eventually(lambda t=task_id: asyncio.sleep(0, receiver.completed(t)), timeout=60, what="COMPLETED")
    await asyncio.sleep(2 * LEASE_SECONDS)  # a second POST of any update would have come by now
    for task_id in tasks:
        assert_every_update_once_in_order(replicated, receiver, task_id)


async def test_the_other_replica_takes_over_when_the_leasing_one_dies(
    replicated: Stack, receiver: SlowReceiver
) -> None:
    receiver.accepting = False  # the holder keeps retrying the first update, holding the lease
    async with clients(replicated, replicas(replicated)) as (first, _second):
        task_id = await slow_task_with_a_hook(first, receiver.url, 2_000)
    holder = await eventually(lambda: asyncio.sleep(0, lease_holder(replicated, task_id)), what="a lease taken")
    by_identity = {f"{replicated.org}/{replicated.unit}/{process.name}": process for process in replicas(replicated)}
    dying = by_identity[holder]
    dying.kill()
    receiver.accepting = True
    await eventually(lambda: asyncio.sleep(0, receiver.completed(task_id)), timeout=60, what="delivered after takeover")
    assert lease_holder(replicated, task_id) in (None, *(name for name in by_identity if name != holder))
    firsts: dict[str, dict[str, Any]] = {}
    for item in receiver.of(task_id):  # a POST the dying replica had in flight may arrive too: same delivery id
        firsts.setdefault(item["delivery_id"], item)
    stored = [event["event"] for event in stored_events(replicated, task_id)]
    positions = [stored.index(item["body"]) for item in firsts.values()]
    assert positions == list(range(len(stored))), f"lost or out of order: {positions}"
