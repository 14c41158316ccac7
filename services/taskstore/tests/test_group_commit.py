"""Group commit: a burst of events is written in a few transactions, not one per event, and every event is still
recorded exactly once, each task's events in order."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import ValidationError
from sqlmodel import SQLModel

from a2amesh.models import StreamResponse, TaskState, TaskStatus, TaskStatusUpdateEvent
from a2amesh.mqtt import EVENT_ID_PROPERTY, make_client, publish_properties
from a2amesh.settings import TaskStoreSettings
from a2amesh.topics import AgentAddress
from devstack.fixtures import BrokerHandle
from mesh_taskstore.consumer import EventConsumer
from mesh_taskstore.db import TaskEvent, TaskRecord, create_tables, make_engine
from mesh_taskstore.store import TaskStore

TASKS = 20
STATES = (TaskState.SUBMITTED, TaskState.WORKING, TaskState.COMPLETED)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_a_burst_is_written_in_batches_and_every_event_once(
    broker: BrokerHandle, tmp_path: Path, request: pytest.FixtureRequest, backend: str
) -> None:
    url = request.getfixturevalue("postgres_url") if backend == "postgresql" else f"sqlite:///{tmp_path / 's.db'}"
    engine = make_engine(url)
    SQLModel.metadata.drop_all(engine, tables=[TaskRecord.__table__, TaskEvent.__table__])  # type: ignore[attr-defined]
    create_tables(engine)
    commits = 0

    @sa.event.listens_for(engine, "commit")
    def _count(_connection: Any) -> None:
        nonlocal commits
        commits += 1

    org = f"gc-{uuid.uuid4().hex[:8]}"
    consumer = EventConsumer(
        TaskStore(engine), broker.settings, f"{org}-store", batch_max_events=100, batch_max_wait=0.2
    )
    stop = asyncio.Event()
    running = asyncio.create_task(consumer.run(stop))
    agent = AgentAddress(org, "default", "bursty")
    task_ids = [str(uuid.uuid4()) for _ in range(TASKS)]
    try:
        async with make_client(broker.settings, f"pub-{uuid.uuid4().hex[:6]}") as client:
            probe = StreamResponse(
                status_update=TaskStatusUpdateEvent(task_id="probe", status=TaskStatus(state=TaskState.WORKING))
            )
            probe_id = publish_properties(user=[(EVENT_ID_PROPERTY, f"{org}-probe")])
            for _ in range(150):  # bounded: until the consumer's subscription is in place (one id: recorded once)
                await client.publish(agent.event_topic, probe.to_json(), qos=1, properties=probe_id)
                await asyncio.sleep(0.2)
                with engine.connect() as connection:
                    if connection.execute(sa.text("SELECT count(*) FROM task_event")).scalar_one():
                        break
            before = commits
            for state in STATES:
                for task_id in task_ids:
                    update = TaskStatusUpdateEvent(task_id=task_id, context_id="c", status=TaskStatus(state=state))
                    event = StreamResponse(status_update=update)
                    properties = publish_properties(user=[(EVENT_ID_PROPERTY, f"{task_id}-{state.value}")])
                    await client.publish(agent.event_topic, event.to_json(), qos=1, properties=properties)
        with engine.connect() as connection:
            for _ in range(300):
                recorded = connection.execute(sa.text("SELECT count(*) FROM task_event")).scalar_one()
                if recorded >= TASKS * len(STATES) + 1:
                    break
                connection.rollback()
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.wait_for(running, timeout=30)

    with engine.connect() as connection:
        events = connection.execute(sa.text("SELECT count(*), count(DISTINCT event_id) FROM task_event")).one()
        states = dict(connection.execute(sa.text("SELECT task_id, state FROM task_record")).all())
    engine.dispose()
    assert tuple(events) == (TASKS * len(STATES) + 1, TASKS * len(STATES) + 1)
    assert states == {**dict.fromkeys(task_ids, TaskState.COMPLETED.value), "probe": TaskState.WORKING.value}
    burst = commits - before
    assert burst < TASKS * len(STATES) / 4, f"{burst} transactions for {TASKS * len(STATES)} events"


@pytest.mark.parametrize(("name", "value"), [("MESH_BATCH_MAX_EVENTS", "0"), ("MESH_BATCH_MAX_WAIT", "5")])
def test_unbounded_batches_are_refused(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        TaskStoreSettings()
