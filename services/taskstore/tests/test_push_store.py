"""Push configs in the store: scoped to the task's owner, started after the task's latest event, the pending
updates in order after the cursor, the cursor only moving forward, each config leased to one coordinator replica at
a time (taken over once the lease expires, given up when delivered or released), and dead letters read by their
owner only."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlmodel import SQLModel

from a2amesh.models import StreamResponse, Task, TaskState, TaskStatus, TaskStatusUpdateEvent
from mesh_taskstore.db import (
    PushConfig,
    PushDeadLetter,
    PushLease,
    TaskEvent,
    TaskOwner,
    TaskRecord,
    create_tables,
    make_engine,
)
from mesh_taskstore.push import MAX_CONFIGS_PER_TASK, PushStore
from mesh_taskstore.store import Incoming, Owner, TaskStore

T0 = datetime(2025, 1, 1, tzinfo=UTC)
ALICE, BOB = Owner("key:alice", "t1"), Owner("key:bob", "t1")
TABLES = [PushDeadLetter, PushLease, PushConfig, TaskOwner, TaskEvent, TaskRecord]
LEASE = 30.0
ONE, TWO = "acme/default/coordinator", "acme/default/coordinator-1"


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
    assert push.claim(ONE, LEASE) == []  # the update before the config is not delivered
    record(push, "e2", "t1", TaskState.WORKING, 1)
    record(push, "e3", "t1", TaskState.COMPLETED, 2)
    (entry,) = push.claim(ONE, LEASE)
    assert [item["eventId"] for item in entry["events"]] == ["e2", "e3"]
    first, second = (item["seq"] for item in entry["events"])
    assert push.advance("t1", "hook", first, ONE)
    assert [item["eventId"] for item in push.claim(ONE, LEASE)[0]["events"]] == ["e3"]
    assert push.advance("t1", "hook", 0, ONE)  # never back
    assert [item["eventId"] for item in push.claim(ONE, LEASE)[0]["events"]] == ["e3"]
    push.advance("t1", "hook", second)
    assert push.claim(ONE, LEASE) == []
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


def pending_ids(entries: list[dict[str, object]]) -> list[str]:
    return [str(entry["taskId"]) for entry in entries]


def test_one_replica_at_a_time_delivers_a_config_and_another_takes_over_when_its_lease_expires(
    push: PushStore,
) -> None:
    for task_id in ("t1", "t2"):
        record(push, f"{task_id}-e1", task_id, TaskState.SUBMITTED)
        push.put(task_id, config(), None)
        record(push, f"{task_id}-e2", task_id, TaskState.WORKING, 1)
    assert sorted(pending_ids(push.claim(ONE, LEASE))) == ["t1", "t2"]
    assert push.claim(TWO, LEASE) == []  # both leased to the first replica
    assert sorted(pending_ids(push.claim(ONE, LEASE))) == ["t1", "t2"]  # its own, handed out again (renewed)
    (entry,) = [entry for entry in push.claim(ONE, LEASE) if entry["taskId"] == "t1"]
    seq = int(entry["events"][0]["seq"])  # type: ignore[index]
    assert push.advance("t1", "hook", seq, TWO) is None  # not its lease: the cursor stays
    assert push.advance("t1", "hook", seq, ONE)  # delivered up to the latest event: the lease is given up
    record(push, "t1-e3", "t1", TaskState.COMPLETED, 2)
    assert pending_ids(push.claim(TWO, LEASE)) == ["t1"]  # the next update goes to whoever claims it first
    # the first replica dies holding t2 (its last look leased it for a moment only): once that lease expires the
    # second replica claims it, and a late advance of the dead one's is refused
    push.claim(ONE, 0.001)
    time.sleep(0.01)
    assert sorted(pending_ids(push.claim(TWO, LEASE))) == ["t1", "t2"]
    (taken,) = [entry for entry in push.claim(TWO, LEASE) if entry["taskId"] == "t2"]
    seq = int(taken["events"][0]["seq"])  # type: ignore[index]
    assert push.advance("t2", "hook", seq, ONE) is None
    assert push.advance("t2", "hook", seq, TWO)
    assert pending_ids(push.claim(ONE, LEASE)) == []  # t1 is still the second's, t2 delivered


def test_a_stopping_replica_releases_its_leases_for_the_others(push: PushStore) -> None:
    record(push, "e1", "t1", TaskState.SUBMITTED)
    push.put("t1", config(), None)
    record(push, "e2", "t1", TaskState.WORKING, 1)
    assert pending_ids(push.claim(ONE, LEASE)) == ["t1"]
    assert push.claim(TWO, LEASE) == []
    assert push.release(ONE) == 1
    assert pending_ids(push.claim(TWO, LEASE)) == ["t1"]
    assert push.claim(ONE, LEASE) == []


def test_configs_of_tasks_finished_past_the_retention_are_deleted_once_delivered(push: PushStore) -> None:
    """Recorded at T0 (2025), so a day's retention has passed for those; one task ends just now."""
    for task_id in ("done", "undelivered", "running", "recent"):
        record(push, f"{task_id}-e1", task_id, TaskState.SUBMITTED)
        push.put(task_id, config(), None)
        push.put(task_id, config("second"), None)
    for task_id in ("done", "undelivered"):
        record(push, f"{task_id}-e2", task_id, TaskState.COMPLETED, 1)
    record(push, "running-e2", "running", TaskState.WORKING, 1)
    update = TaskStatusUpdateEvent(task_id="recent", context_id="c", status=TaskStatus(state=TaskState.FAILED))
    push.tasks.record(
        Incoming("recent-e2", "acme/default/echo", StreamResponse(status_update=update), datetime.now(UTC))
    )
    for entry in push.claim(ONE, LEASE):  # every update out, but the undelivered task's first config's
        for item in entry["events"]:  # type: ignore[union-attr]
            if (entry["taskId"], entry["id"]) != ("undelivered", "hook"):
                push.advance(str(entry["taskId"]), str(entry["id"]), int(item["seq"]), ONE)
    push.claim(ONE, LEASE)  # holds the undelivered config's lease
    assert push.sweep(retention=86_400) == 3  # "done": both configs; "undelivered": the delivered one
    assert push.list("done", None) == []
    assert [c["id"] for c in push.list("undelivered", None) or []] == ["hook"]
    assert len(push.list("running", None) or []) == 2
    assert len(push.list("recent", None) or []) == 2  # ended a moment ago: within the retention
    assert push.sweep(retention=86_400) == 0
    (entry,) = push.claim(ONE, LEASE)
    push.advance("undelivered", "hook", int(entry["events"][-1]["seq"]), ONE)  # type: ignore[index]
    assert push.sweep(retention=86_400) == 1 and push.list("undelivered", None) == []
    assert push.claim(TWO, LEASE) == []
