"""Push configs in the store: scoped to the task's owner, started after the task's latest event, the pending
updates in order after the cursor, the cursor only moving forward, and dead letters read by their owner only."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlmodel import SQLModel

from a2amesh.models import StreamResponse, Task, TaskState, TaskStatus, TaskStatusUpdateEvent
from mesh_taskstore.db import PushConfig, PushDeadLetter, TaskEvent, TaskOwner, TaskRecord, create_tables, make_engine
from mesh_taskstore.push import MAX_CONFIGS_PER_TASK, PushStore
from mesh_taskstore.store import Incoming, Owner, TaskStore

T0 = datetime(2025, 1, 1, tzinfo=UTC)
ALICE, BOB = Owner("key:alice", "t1"), Owner("key:bob", "t1")
TABLES = [PushDeadLetter, PushConfig, TaskOwner, TaskEvent, TaskRecord]


@pytest.fixture(params=["sqlite", "postgresql"])
def push(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[PushStore]:
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres_url")
    else:
        url = os.environ.get("MESH_TEST_DATABASE_URL") or f"sqlite:///{tmp_path / 'push.db'}"
    engine = make_engine(url)
    SQLModel.metadata.drop_all(engine, tables=[table.__table__ for table in TABLES])  # type: ignore[attr-defined]
    create_tables(engine)
    yield PushStore(TaskStore(engine))
    engine.dispose()


def record(push: PushStore, event_id: str, task_id: str, state: TaskState, seconds: float = 0) -> None:
    if state is TaskState.SUBMITTED:
        event = StreamResponse(task=Task(id=task_id, context_id="c", status=TaskStatus(state=state)))
    else:
        update = TaskStatusUpdateEvent(task_id=task_id, context_id="c", status=TaskStatus(state=state))
        event = StreamResponse(status_update=update)
    push.tasks.record(Incoming(event_id, "acme/default/echo", event, T0 + timedelta(seconds=seconds)))


def config(config_id: str = "hook") -> dict[str, object]:
    return {
        "id": config_id,
        "url": "https://example.com/hook",
        "authentication": {"scheme": "Bearer", "credentials": "s"},
    }


def test_configs_belong_to_the_tasks_owner(push: PushStore) -> None:
    record(push, "e1", "t1", TaskState.SUBMITTED)
    push.tasks.claim("t1", ALICE)
    saved = push.put("t1", config(), ALICE)
    assert saved == {
        "taskId": "t1",
        "id": "hook",
        "url": "https://example.com/hook",
        "authentication": {"scheme": "Bearer", "credentials": "s"},
    }
    assert push.put("t1", config("b"), BOB) is None
    assert push.list("t1", BOB) is None
    assert not push.delete("t1", "hook", BOB)
    assert [c["id"] for c in push.list("t1", ALICE) or []] == ["hook"]
    assert [c["id"] for c in push.list("t1", None) or []] == ["hook"]  # an operator
    assert push.delete("t1", "hook", ALICE)
    assert push.list("t1", ALICE) == []


def test_pending_updates_come_after_the_config_in_order_and_the_cursor_only_moves_on(push: PushStore) -> None:
    record(push, "e1", "t1", TaskState.SUBMITTED)
    push.tasks.claim("t1", ALICE)
    push.put("t1", config(), ALICE)
    assert push.pending() == []  # the update before the config is not delivered
    record(push, "e2", "t1", TaskState.WORKING, 1)
    record(push, "e3", "t1", TaskState.COMPLETED, 2)
    (entry,) = push.pending()
    assert [item["eventId"] for item in entry["events"]] == ["e2", "e3"]
    first, second = (item["seq"] for item in entry["events"])
    assert push.advance("t1", "hook", first)
    assert [item["eventId"] for item in push.pending()[0]["events"]] == ["e3"]
    assert push.advance("t1", "hook", 0)  # never back
    assert [item["eventId"] for item in push.pending()[0]["events"]] == ["e3"]
    push.advance("t1", "hook", second)
    assert push.pending() == []
    assert not push.advance("t1", "gone", second)


def test_a_task_has_a_bounded_number_of_configs(push: PushStore) -> None:
    record(push, "e1", "t1", TaskState.SUBMITTED)
    for index in range(MAX_CONFIGS_PER_TASK):
        push.put("t1", config(f"c{index}"), None)
    with pytest.raises(ValueError, match="at most"):
        push.put("t1", config("one-more"), None)


def test_dead_letters_are_read_by_their_owner_and_recorded_once(push: PushStore) -> None:
    record(push, "e1", "t1", TaskState.SUBMITTED)
    push.tasks.claim("t1", ALICE)
    letter = {
        "deliveryId": "d1",
        "taskId": "t1",
        "configId": "hook",
        "url": "https://example.com/hook",
        "eventSeq": 1,
        "attempts": 6,
        "error": "the webhook answered 500",
    }
    push.dead_letter(letter)
    push.dead_letter(letter)  # the coordinator retried its write
    assert [item["deliveryId"] for item in push.dead_letters(ALICE)] == ["d1"]
    assert push.dead_letters(BOB) == []
    assert len(push.dead_letters(None)) == 1
