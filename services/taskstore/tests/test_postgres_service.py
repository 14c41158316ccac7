"""The task store service on a real PostgreSQL: events in over MQTT, the record out over HTTP."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import httpx
import pytest

from a2amesh.models import Message, Part, Role, StreamResponse, Task, TaskState, TaskStatus, TaskStatusUpdateEvent
from a2amesh.mqtt import EVENT_ID_PROPERTY, make_client, publish_properties
from a2amesh.topics import AgentAddress
from devstack.fixtures import BrokerHandle
from devstack.processes import free_port
from devstack.stack import Ports, Stack

IMAGE_OPTIMIZATION = "2"
"""The level the store's image runs at (services/Dockerfile's SERVICE_OPTIMIZE, as compose.yaml builds it): without
docstrings and asserts, which must cost it nothing it does."""


@pytest.mark.parametrize("optimize", ["", IMAGE_OPTIMIZATION], ids=["as-dev", "as-image"])
async def test_the_store_records_a_task_in_postgresql(
    broker: BrokerHandle, postgres_url: str, tmp_path: Path, optimize: str
) -> None:
    ports = Ports(mqtt=broker.port, redis=0, registry=0, taskstore=free_port(), coordinator=0)
    stack = Stack(
        run_dir=tmp_path,
        ports=ports,
        org=f"pg-{uuid.uuid4().hex[:8]}",
        broker_of=broker.stack,
        database_url=postgres_url,
    )
    store = stack.taskstore()
    store.env["PYTHONOPTIMIZE"] = optimize
    stack.launch(store)
    task_id = str(uuid.uuid4())
    message = Message(message_id="m1", role=Role.USER, parts=[Part(text="hello")], task_id=task_id, context_id="c")
    events = [
        StreamResponse(
            task=Task(id=task_id, context_id="c", status=TaskStatus(state=TaskState.SUBMITTED), history=[message])
        ),
        *(
            StreamResponse(
                status_update=TaskStatusUpdateEvent(task_id=task_id, context_id="c", status=TaskStatus(state=state))
            )
            for state in (TaskState.WORKING, TaskState.COMPLETED)
        ),
    ]
    try:
        async with make_client(broker.settings, f"pg-pub-{uuid.uuid4().hex[:6]}") as client:
            for event in events:
                properties = publish_properties(user=[(EVENT_ID_PROPERTY, uuid.uuid4().hex)])
                await client.publish(
                    AgentAddress(stack.org, stack.unit, "agent-pg").event_topic,
                    event.to_json(),
                    qos=1,
                    properties=properties,
                )
        async with httpx.AsyncClient(base_url=stack.taskstore_url, timeout=5) as http:
            deadline, record = time.monotonic() + 15, None
            while time.monotonic() < deadline:
                response = await http.get(f"/tasks/{task_id}/events?scope=all")
                if response.status_code == 200 and len(response.json()["statusHistory"]) == 3:
                    record = response.json()
                    break
                await asyncio.sleep(0.2)
    finally:
        codes = stack.stop()
    assert record is not None, "the task never reached PostgreSQL"
    assert [s["state"] for s in record["statusHistory"]] == [
        "TASK_STATE_SUBMITTED",
        "TASK_STATE_WORKING",
        "TASK_STATE_COMPLETED",
    ]
    assert codes["taskstore"] == 0
