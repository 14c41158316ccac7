"""An event the task store received but never wrote is not lost when the store dies: it acknowledges only after the
write, so the broker redelivers it from the persistent session on the next start."""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from pathlib import Path

import httpx

from a2amesh.models import StreamResponse, TaskState, TaskStatus, TaskStatusUpdateEvent
from a2amesh.mqtt import EVENT_ID_PROPERTY, make_client, publish_properties
from a2amesh.topics import AgentAddress
from devstack.fixtures import BrokerHandle
from devstack.processes import free_port
from devstack.stack import Ports, Stack

EVENTS = 30


async def test_events_received_but_not_written_are_redelivered_after_a_crash(broker: BrokerHandle, tmp_path: Path):
    database = tmp_path / "store.db"
    ports = Ports(mqtt=broker.port, redis=0, registry=0, taskstore=free_port(), coordinator=0)
    stack = Stack(
        run_dir=tmp_path,
        ports=ports,
        org=f"crash-{uuid.uuid4().hex[:8]}",
        broker_of=broker.stack,
        database_url=f"sqlite:///{database}",
    )
    store = stack.launch(stack.taskstore())
    task_ids = [str(uuid.uuid4()) for _ in range(EVENTS)]

    blocker = sqlite3.connect(database, timeout=1)
    blocker.execute("BEGIN EXCLUSIVE")  # the store can read nothing and write nothing: its writer retries
    try:
        agent = AgentAddress(stack.org, stack.unit, "crashy")
        async with make_client(broker.settings, f"pub-{uuid.uuid4().hex[:6]}") as client:
            for task_id in task_ids:
                event = StreamResponse(
                    status_update=TaskStatusUpdateEvent(
                        task_id=task_id, context_id="c", status=TaskStatus(state=TaskState.COMPLETED)
                    )
                )
                properties = publish_properties(user=[(EVENT_ID_PROPERTY, uuid.uuid4().hex)])
                await client.publish(agent.event_topic, event.to_json(), qos=1, properties=properties)
        await wait_for_log(store.log_path, "database unavailable", seconds=20)  # received, not written
        store.kill()  # SIGKILL: no drain, no chance to write
    finally:
        blocker.rollback()
        blocker.close()

    stack.launch(stack.taskstore())
    async with httpx.AsyncClient(base_url=stack.taskstore_url, timeout=5) as http:
        deadline = time.monotonic() + 30
        recorded: set[str] = set()
        while time.monotonic() < deadline and len(recorded) < EVENTS:
            for task_id in set(task_ids) - recorded:
                if (await http.get(f"/tasks/{task_id}?scope=all")).status_code == 200:
                    recorded.add(task_id)
            await asyncio.sleep(0.2)
    stack.stop()
    assert len(recorded) == EVENTS, f"{EVENTS - len(recorded)} events lost"


async def wait_for_log(path: Path, text: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await asyncio.to_thread(logged, path, text):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{text!r} never logged in {path}")


def logged(path: Path, text: str) -> bool:
    return path.exists() and text in path.read_text(errors="replace")
