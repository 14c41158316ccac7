"""The persistence layer on a real SQLite file: idempotency, the event log, status history and keyset pages."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlmodel import Session, SQLModel

from a2amesh.models import (
    Artifact,
    Message,
    Part,
    Role,
    StreamResponse,
    Task,
    TaskState,
    TaskStatus,
    TaskStatusUpdateEvent,
)
from mesh_taskstore.apply import trim
from mesh_taskstore.db import TaskEvent, TaskOwner, TaskRecord, create_tables, make_engine, utc
from mesh_taskstore.store import (
    STATES_CHUNK,
    Cursor,
    Incoming,
    Outcome,
    Owner,
    TaskQuery,
    TaskStore,
    status_history,
)

T0 = datetime(2025, 1, 1, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TaskStore]:
    """A store on a fresh SQLite file and on a real PostgreSQL (emptied per test): every store test runs on both.
    MESH_TEST_DATABASE_URL replaces the SQLite case with a database of your own."""
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres_url")
    else:
        url = os.environ.get("MESH_TEST_DATABASE_URL") or f"sqlite:///{tmp_path / 'nested' / 'store.db'}"
    engine = make_engine(url)
    tables = [TaskRecord.__table__, TaskEvent.__table__, TaskOwner.__table__]  # type: ignore[attr-defined]
    SQLModel.metadata.drop_all(engine, tables=tables)
    create_tables(engine)
    store = TaskStore(engine)
    yield store
    store.close()  # its writing connection back to the pool, which the dispose closes
    engine.dispose()


def incoming(event_id: str, event: StreamResponse, seconds: float = 0) -> Incoming:
    return Incoming(event_id, "acme/default/agent-x", event, T0 + timedelta(seconds=seconds))


def task_event(task_id: str, state: TaskState = TaskState.SUBMITTED, context_id: str = "ctx") -> StreamResponse:
    return StreamResponse(task=Task(id=task_id, context_id=context_id, status=TaskStatus(state=state)))


def status_event(task_id: str, state: TaskState, timestamp: datetime | None = None) -> StreamResponse:
    status = TaskStatus(state=state, timestamp=timestamp)
    update = TaskStatusUpdateEvent(task_id=task_id, context_id="ctx", status=status)
    return StreamResponse(status_update=update)


def test_same_event_id_is_stored_once(store: TaskStore) -> None:
    assert store.record(incoming("e1", task_event("t1"))) is Outcome.STORED
    assert store.record(incoming("e1", status_event("t1", TaskState.WORKING), 1)) is Outcome.DUPLICATE
    assert [row.event_id for row in store.events("t1")] == ["e1"]
    stored = store.get("t1")
    assert stored is not None and stored.task.status.state is TaskState.SUBMITTED
    assert stored.agent == "acme/default/agent-x"


def test_refused_reopening_is_logged_not_applied(store: TaskStore) -> None:
    store.record(incoming("e1", task_event("t1")))
    store.record(incoming("e2", status_event("t1", TaskState.CANCELED), 1))
    assert store.record(incoming("e3", status_event("t1", TaskState.WORKING), 2)) is Outcome.NOT_APPLIED
    rows = store.events("t1")
    assert [(row.event_id, row.applied) for row in rows] == [("e1", True), ("e2", True), ("e3", False)]
    assert [s.state for s in status_history(rows)] == [TaskState.SUBMITTED, TaskState.CANCELED]
    stored = store.get("t1")
    assert stored is not None and stored.task.status.state is TaskState.CANCELED


def test_status_history_collapses_restatements(store: TaskStore) -> None:
    store.record(incoming("e1", task_event("t1")))
    store.record(incoming("e2", status_event("t1", TaskState.COMPLETED), 1))
    store.record(incoming("e3", task_event("t1", TaskState.COMPLETED), 2))
    assert [s.state for s in status_history(store.events("t1"))] == [TaskState.SUBMITTED, TaskState.COMPLETED]


def test_pages_in_keyset_order(store: TaskStore) -> None:
    for index in range(7):
        store.record(incoming(f"e{index}", task_event(f"t{index}", context_id="a"), seconds=index))
    store.record(incoming("same-time", task_event("t-same", context_id="a"), seconds=6))  # a tie on updated_at
    store.record(incoming("other", task_event("t-other", context_id="b"), seconds=3))
    seen: list[str] = []
    cursor = None
    while True:
        page = store.list_tasks(TaskQuery(context_id="a", page_size=3, cursor=cursor))
        assert page.total_size == 8
        seen += [task.id for task in page.tasks]
        if not page.next_page_token:
            break
        cursor = Cursor.decode(page.next_page_token)
    assert seen == ["t6", "t-same", "t5", "t4", "t3", "t2", "t1", "t0"]


def test_later_pages_stop_at_the_oldest_match_yet_list_every_task(store: TaskStore) -> None:
    """A listing's token carries the oldest match's updated_at from its first page (so a last page does not walk the
    whole table); tasks that arrive or change meanwhile are newer, and every task matching all along is listed
    once. A token without that floor (an older store's) pages the same."""
    for index in range(10):
        store.record(incoming(f"old{index}", task_event(f"old{index}"), seconds=index))  # never matching
    after = T0 + timedelta(days=1)
    for index in range(7):
        store.record(
            incoming(
                f"e{index}",
                status_event(f"old{index}", TaskState.COMPLETED, after + timedelta(seconds=index)),
                20 + index,
            )
        )
    query = TaskQuery(status_after=after, page_size=3)
    first = store.list_tasks(query)
    cursor = Cursor.decode(first.next_page_token)
    assert cursor.floor == T0 + timedelta(seconds=21) and first.total_size == 6  # old0: not after `after`
    store.record(incoming("late", status_event("old9", TaskState.FAILED, after + timedelta(hours=1)), 40))
    seen = [task.id for task in first.tasks]
    legacy = Cursor(cursor.updated_at, cursor.task_id)
    for start in (cursor, legacy):
        listed, token = list(seen), start
        while token is not None:
            page = store.list_tasks(TaskQuery(status_after=after, page_size=3, cursor=token))
            listed += [task.id for task in page.tasks]
            token = Cursor.decode(page.next_page_token) if page.next_page_token else None
        assert listed == ["old6", "old5", "old4", "old3", "old2", "old1"]


def test_list_filters(store: TaskStore) -> None:
    store.record(incoming("e1", task_event("t1")))
    store.record(incoming("e2", task_event("t2")))
    store.record(incoming("e3", status_event("t2", TaskState.COMPLETED, T0 + timedelta(days=30)), 1))
    completed = store.list_tasks(TaskQuery(state=TaskState.COMPLETED))
    assert [task.id for task in completed.tasks] == ["t2"] and completed.total_size == 1
    recent = store.list_tasks(TaskQuery(status_after=T0 + timedelta(days=1)))
    assert [task.id for task in recent.tasks] == ["t2"]
    assert store.list_tasks(TaskQuery(context_id="nope")).tasks == []


def test_list_filters_by_agent(store: TaskStore) -> None:
    """One agent's endpoint lists only its tasks (every instance of a pool at once)."""
    for event_id, agent in (("e1", "acme/default/echo"), ("e2", "acme/default/research-0"), ("e3", "acme/default/x")):
        store.record(Incoming(event_id, agent, task_event(f"t-{event_id}"), T0))
    assert [t.id for t in store.list_tasks(TaskQuery(agents=("acme/default/echo",))).tasks] == ["t-e1"]
    pool = store.list_tasks(TaskQuery(agents=("acme/default/research-0", "acme/default/x")))
    assert sorted(t.id for t in pool.tasks) == ["t-e2", "t-e3"] and pool.total_size == 2
    assert store.list_tasks(TaskQuery()).total_size == 3


def test_a_listing_shows_each_task_as_trimming_its_model_would(store: TaskStore) -> None:
    """A listing passes the stored snapshots' JSON on with keys dropped instead of parsing each into a Task: what
    it shows must be exactly the trimmed model's wire form, for every historyLength and artifacts choice."""
    messages = [
        Message(message_id=f"m{i}", role=Role.USER if i % 2 else Role.AGENT, parts=[Part(text=f"é {i}")])
        for i in range(3)
    ]
    final = Message(message_id="done", role=Role.AGENT, parts=[Part(data={"n": 1.5, "ok": True})])
    whole = Task(
        id="t-whole",
        context_id="ctx",
        history=messages,
        artifacts=[Artifact(artifact_id="a1", name="echo", parts=[Part(text="out")])],
        status=TaskStatus(state=TaskState.COMPLETED, timestamp=T0 + timedelta(seconds=1), message=final),
        metadata={"skill": "echo", "nested": {"list": [1, "two"]}},
    )
    store.record(incoming("e1", StreamResponse(task=whole)))
    store.record(incoming("e2", task_event("t-bare"), 1))  # no history, no artifacts
    stored = {task_id: store.get(task_id) for task_id in ("t-whole", "t-bare")}
    for history_length in (None, 0, 1, 2, 10):
        for include_artifacts in (False, True):
            page = store.list_tasks(TaskQuery(history_length=history_length, include_artifacts=include_artifacts))
            expected = {
                task_id: trim(found.task, history_length, include_artifacts).to_wire()
                for task_id, found in stored.items()
                if found is not None
            }
            assert {task["id"]: task for task in page.wire} == expected, (history_length, include_artifacts)
            assert {task.id: task.to_wire() for task in page.tasks} == expected


def test_updated_at_never_moves_backward(store: TaskStore) -> None:
    """Two store replicas receive a task's events on their own clocks: an event received earlier but written
    later leaves the task's updated_at where it was (a listing's later pages stop at its first page's oldest
    match), in the same batch and in a later one."""
    store.record(incoming("n1", task_event("t1"), 10))
    store.record_many([incoming("n2", status_event("t1", TaskState.WORKING), 5)])
    assert store.list_tasks(TaskQuery()).wire[0]["id"] == "t1"
    with Session(store.engine) as session:
        assert utc(session.get(TaskRecord, "t1").updated_at) == T0 + timedelta(seconds=10)
    later_then_earlier = [
        incoming("n3", status_event("t1", TaskState.WORKING), 12),
        incoming("n4", status_event("t1", TaskState.COMPLETED), 8),
    ]
    assert store.record_many(later_then_earlier) == [Outcome.STORED, Outcome.STORED]
    with Session(store.engine) as session:
        assert utc(session.get(TaskRecord, "t1").updated_at) == T0 + timedelta(seconds=12)


def test_cursor_round_trip_and_garbage() -> None:
    cursor = Cursor(datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC), "t/1")
    assert Cursor.decode(cursor.encode()) == cursor
    floored = Cursor(cursor.updated_at, "t/1", floor=datetime(2025, 1, 1, tzinfo=UTC))
    assert Cursor.decode(floored.encode()) == floored
    out_of_range = "0001-01-01T00:00:00+01:00"  # parses, but is before year 1 once in UTC
    forged = [{"u": out_of_range, "i": "t"}, {"u": "2025-01-01T00:00:00+00:00", "i": "t", "f": out_of_range}]
    tokens = [base64.urlsafe_b64encode(json.dumps(fields).encode()).decode() for fields in forged]
    for token in ("???", "bm90IGpzb24", "e30", *tokens):
        with pytest.raises(ValueError):
            Cursor.decode(token)


def test_batch_applies_in_order_with_duplicates(store: TaskStore) -> None:
    batch = [
        incoming("b1", task_event("t1")),
        incoming("b2", status_event("t1", TaskState.WORKING), 1),
        incoming("b1", task_event("t1"), 2),  # a redelivery inside the same batch
        incoming("b3", task_event("t2"), 3),
        incoming("b4", status_event("t1", TaskState.COMPLETED), 4),
        incoming("b5", status_event("t1", TaskState.WORKING), 5),  # would reopen: kept, not applied
    ]
    outcomes = store.record_many(batch)
    assert outcomes == [
        Outcome.STORED,
        Outcome.STORED,
        Outcome.DUPLICATE,
        Outcome.STORED,
        Outcome.STORED,
        Outcome.NOT_APPLIED,
    ]
    rows = store.events("t1")
    assert [row.event_id for row in rows] == ["b1", "b2", "b4", "b5"]
    assert [s.state for s in status_history(rows)] == [TaskState.SUBMITTED, TaskState.WORKING, TaskState.COMPLETED]
    stored = store.get("t1")
    assert stored is not None and stored.task.status.state is TaskState.COMPLETED
    assert store.record_many(batch) == [Outcome.DUPLICATE] * len(batch)  # a whole batch redelivered


def test_a_bad_row_fails_alone(store: TaskStore) -> None:
    """A stored snapshot that no longer parses fails its own events, not the rest of the batch."""
    store.record(incoming("e1", task_event("broken")))
    with store.engine.begin() as connection:
        connection.execute(TaskRecord.__table__.update().values(snapshot="{not json"))  # type: ignore[attr-defined]
    outcomes = store.record_many(
        [incoming("e2", status_event("broken", TaskState.WORKING), 1), incoming("e3", task_event("fine"), 2)]
    )
    assert outcomes == [Outcome.FAILED, Outcome.STORED]
    assert store.get("fine") is not None


def test_a_task_across_batches_builds_on_the_stored_snapshot_even_when_another_writer_changed_it(
    store: TaskStore,
) -> None:
    """The store remembers the snapshots its last batch wrote, to spare parsing them back in the next: a snapshot
    someone else wrote since (another replica, a repair) is the one the next event applies to."""
    store.record_many([incoming("s1", task_event("t1")), incoming("s2", task_event("t2"))])
    second = [incoming("s3", status_event("t1", TaskState.WORKING), 1), incoming("s4", task_event("t2"), 1)]
    assert store.record_many(second) == [Outcome.STORED, Outcome.STORED]
    stored = store.get("t1")
    assert stored is not None and stored.task.status.state is TaskState.WORKING
    elsewhere = Task(id="t2", context_id="ctx-elsewhere", status=TaskStatus(state=TaskState.WORKING))
    records = TaskRecord.__table__  # type: ignore[attr-defined]
    with store.engine.begin() as connection:
        connection.execute(records.update().where(records.c.task_id == "t2").values(snapshot=elsewhere.to_json()))
    store.record_many([incoming("s5", status_event("t2", TaskState.COMPLETED), 2)])
    stored = store.get("t2")
    assert stored is not None and stored.task.status.state is TaskState.COMPLETED
    assert stored.task.context_id == "ctx-elsewhere", "the event was applied to a remembered, outdated snapshot"


def test_events_and_their_owners_are_recorded_together(store: TaskStore) -> None:
    alice, bob = Owner("key:alice", "t1"), Owner("key:bob", "t1")
    events = [incoming("j1", task_event("joint")), incoming("j2", status_event("joint", TaskState.WORKING), 1)]
    outcomes, claimed = store.record_with_owners(events, [("joint", alice), ("joint", alice), ("solo", bob)])
    assert outcomes == [Outcome.STORED, Outcome.STORED]
    assert claimed == [True, True, True]
    stored = store.get("joint", alice)
    assert stored is not None and stored.task.status.state is TaskState.WORKING
    assert store.get("joint", bob) is None
    assert store.owner_of("solo") == bob  # an owner whose task has no events yet
    outcomes, claimed = store.record_with_owners(events, [("joint", bob)])  # redelivered, and a rival owner
    assert outcomes == [Outcome.DUPLICATE, Outcome.DUPLICATE]
    assert claimed == [False]
    assert store.owner_of("joint") == alice


def test_a_bad_owner_row_costs_its_batch_events_nothing(store: TaskStore) -> None:
    """The joint transaction fails on the broken row; the fallback records the events and the good owner apart."""
    alice = Owner("key:alice")
    broken = Owner(None)  # type: ignore[arg-type]  # NOT NULL: the database refuses it
    events = [incoming("b1", task_event("kept"))]
    outcomes, claimed = store.record_with_owners(events, [("kept", alice), ("broken", broken)])
    assert outcomes == [Outcome.STORED]
    assert claimed == [True, False]
    assert store.get("kept", alice) is not None
    assert store.owner_of("broken") is None


def test_an_owner_lands_whether_before_or_after_the_tasks_events_and_only_once(store: TaskStore) -> None:
    alice, bob = Owner("key:alice", "t1"), Owner("key:bob", "t1")
    assert store.claim_many([("early", alice)]) == [True]  # the owner before any event
    assert store.get("early", alice) is None  # nothing to read yet, and no error
    store.record_many([incoming("e1", task_event("early")), incoming("l1", task_event("late"))])
    assert store.claim_many([("late", alice), ("late", alice)]) == [True, True]  # after, and redelivered
    for task_id in ("early", "late"):
        assert store.get(task_id, alice) is not None
        assert store.get(task_id, bob) is None
    assert store.claim_many([("late", bob), ("other", bob)]) == [False, True]  # never taken over
    assert store.owner_of("late") == alice
    listed = store.list_tasks(TaskQuery(owner=alice))
    assert sorted(task.id for task in listed.tasks) == ["early", "late"]
    assert store.list_tasks(TaskQuery(owner=bob)).tasks == []  # "other" has no events yet


def test_states_by_id_span_chunks_and_keep_to_the_owner(store: TaskStore) -> None:
    """A read of many states by id: more ids than one SELECT takes, repeats and unknown ids among them; with an
    owner, only that owner's tasks (a task with no owner row is an operator's only)."""
    alice, bob = Owner("key:alice", "t1"), Owner("key:bob", "t1")
    count = STATES_CHUNK + 100
    ids = [f"s{i}" for i in range(count)]
    final = {task_id for i, task_id in enumerate(ids) if i % 3 == 0}
    events = [incoming(f"e-{task_id}", task_event(task_id)) for task_id in ids]
    events += [incoming(f"f-{task_id}", status_event(task_id, TaskState.COMPLETED), 1) for task_id in sorted(final)]
    claims = [(task_id, alice if i % 2 == 0 else bob) for i, task_id in enumerate(ids[:-1])]  # the last: no owner
    store.record_with_owners(events, claims)

    asked = ["unknown", *reversed(ids), ids[0], "also-unknown"]
    expected = {task_id: TaskState.COMPLETED if task_id in final else TaskState.SUBMITTED for task_id in ids}
    assert store.states(asked) == expected
    assert store.states(asked, alice) == {task_id: expected[task_id] for task_id in ids[:-1:2]}
    assert store.states(asked, bob) == {task_id: expected[task_id] for task_id in ids[1:-1:2]}
    assert store.states(ids, Owner("key:alice", "other-tenant")) == {}
    assert store.states([]) == {}
