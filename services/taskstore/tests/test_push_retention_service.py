"""The task store process deletes the push configs of tasks that ended longer than MESH_PUSH_RETENTION ago once
every update went out, and keeps the others: a database seeded with such tasks, the store started on it, the
configs read back over its HTTP API."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from a2amesh.models import StreamResponse, Task, TaskState, TaskStatus, TaskStatusUpdateEvent
from devstack.fixtures import BrokerHandle
from devstack.processes import free_port
from devstack.stack import Ports, Stack
from mesh_taskstore.db import create_tables, make_engine
from mesh_taskstore.push import PushStore
from mesh_taskstore.store import Incoming, TaskStore

LONG_AGO = datetime.now(UTC) - timedelta(hours=2)


def seed(database_url: str) -> dict[str, str]:
    """Three tasks with a config each: ended long ago and delivered, ended long ago with an update still to go,
    still running. Their ids by kind."""
    engine = make_engine(database_url)
    create_tables(engine)
    push = PushStore(TaskStore(engine))
    ids = {kind: f"{kind}-{uuid.uuid4()}" for kind in ("delivered", "undelivered", "running")}
    for kind, task_id in ids.items():
        first = StreamResponse(task=Task(id=task_id, context_id="c", status=TaskStatus(state=TaskState.SUBMITTED)))
        push.tasks.record(Incoming(f"{task_id}-1", "acme/default/echo", first, LONG_AGO))
        push.put(task_id, {"id": "hook", "url": "https://example.com/hook"}, None)
        state = TaskState.WORKING if kind == "running" else TaskState.COMPLETED
        update = TaskStatusUpdateEvent(task_id=task_id, context_id="c", status=TaskStatus(state=state))
        push.tasks.record(Incoming(f"{task_id}-2", "acme/default/echo", StreamResponse(status_update=update), LONG_AGO))
    for entry in push.claim("acme/default/coordinator", 30):
        if entry["taskId"] != ids["undelivered"]:
            push.advance(str(entry["taskId"]), "hook", int(entry["events"][-1]["seq"]), "acme/default/coordinator")
    engine.dispose()
    return ids


async def test_the_store_deletes_finished_tasks_configs_after_the_retention(
    broker: BrokerHandle, tmp_path: Path
) -> None:
    ports = Ports(mqtt=broker.port, redis=0, registry=0, taskstore=free_port(), coordinator=0)
    stack = Stack(run_dir=tmp_path, ports=ports, org=f"ts-{uuid.uuid4().hex[:12]}", broker_of=broker.stack)
    stack.extra_env["MESH_PUSH_RETENTION"] = "3600"
    ids = seed(f"sqlite:///{tmp_path / 'taskstore.db'}")
    stack.launch(stack.taskstore())
    try:
        async with httpx.AsyncClient(base_url=stack.taskstore_url, timeout=10) as http:

            async def configs(task_id: str) -> list[str]:
                body = (await http.get(f"/tasks/{task_id}/push-configs", params={"scope": "all"})).json()
                return [config["id"] for config in body["configs"]]

            for _ in range(100):  # the first sweep runs as the store starts
                if await configs(ids["delivered"]) == []:
                    break
                await asyncio.sleep(0.1)
            assert await configs(ids["delivered"]) == []
            assert await configs(ids["undelivered"]) == ["hook"]
            assert await configs(ids["running"]) == ["hook"]
    finally:
        assert stack.stop()["taskstore"] == 0, stack["taskstore"].log_tail()
