"""PostgreSQL's own batch statements (mesh_taskstore.pgwrites) against the portable ones SQLite runs: the same rows,
duplicates reported and applied once, and two writers racing for the same events recording each once."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel

from a2amesh.models import (
    Artifact,
    Part,
    StreamResponse,
    Task,
    TaskArtifactUpdateEvent,
    TaskState,
    TaskStatus,
    TaskStatusUpdateEvent,
)
from mesh_taskstore.db import TaskEvent, TaskOwner, TaskRecord, create_tables, make_engine, utc
from mesh_taskstore.store import Incoming, Outcome, TaskStore
from mesh_taskstore.writes import write_batch

T0 = datetime(2025, 1, 1, 12, 30, 15, 123456, tzinfo=UTC)
TABLES = [TaskRecord.__table__, TaskEvent.__table__, TaskOwner.__table__]  # type: ignore[attr-defined]


def fresh_engine(url: str) -> Engine:
    engine = make_engine(url)
    SQLModel.metadata.drop_all(engine, tables=TABLES)
    create_tables(engine)
    return engine


@pytest.fixture
def postgres_engine(postgres_url: str) -> Iterator[Engine]:
    engine = fresh_engine(postgres_url)
    yield engine
    engine.dispose()


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    engine = fresh_engine(f"sqlite:///{tmp_path / 'store.db'}")
    yield engine
    engine.dispose()


def arrival(event_id: str, event: StreamResponse, seconds: float) -> Incoming:
    return Incoming(event_id, "acme/default/agent-x", event, T0 + timedelta(seconds=seconds))


def status(task_id: str, state: TaskState, timestamp: datetime | None = None) -> StreamResponse:
    update = TaskStatusUpdateEvent(
        task_id=task_id, context_id="ctx", status=TaskStatus(state=state, timestamp=timestamp)
    )
    return StreamResponse(status_update=update)


def artifact(task_id: str, text: str) -> StreamResponse:
    piece = Artifact(artifact_id="a1", parts=[Part(text=text)])
    return StreamResponse(artifact_update=TaskArtifactUpdateEvent(task_id=task_id, context_id="ctx", artifact=piece))


BATCHES = [
    [
        arrival(
            "e1", StreamResponse(task=Task(id="t1", context_id="ctx", status=TaskStatus(state=TaskState.SUBMITTED))), 0
        ),
        arrival("e2", status("t1", TaskState.WORKING, T0 + timedelta(microseconds=7)), 1),
        arrival("e1", StreamResponse(task=Task(id="t1", status=TaskStatus(state=TaskState.SUBMITTED))), 2),  # again
        arrival("e3", StreamResponse(task=Task(id="t2", status=TaskStatus(state=TaskState.SUBMITTED))), 3),
        arrival("e4", artifact("t1", 'quotes " and \\ backslashes, {braces}, ünïcode, 𝄞 and a\nnewline'), 4),
    ],
    [
        arrival("e2", status("t1", TaskState.WORKING), 5),  # a redelivery from the previous batch
        arrival("e5", status("t1", TaskState.COMPLETED), 6),
        arrival("e6", status("t1", TaskState.WORKING), 7),  # would reopen t1: kept, not applied
        arrival("e7", status("t2", TaskState.FAILED), 8),
        arrival(
            "e8", StreamResponse(task=Task(id="t3", context_id="ctx-3", status=TaskStatus(state=TaskState.WORKING))), 9
        ),
        arrival("e8", status("t3", TaskState.COMPLETED), 10),  # a duplicate inside the batch, of a new event
    ],
    [arrival("e9", StreamResponse(task=Task(id="t4", status=TaskStatus(state=TaskState.SUBMITTED))), 11)],  # no ctx
    [arrival("e10", StreamResponse(task=Task(id="t4", status=TaskStatus(state=TaskState.COMPLETED))), 12)],  # changed
]
OUTCOMES = [
    [Outcome.STORED, Outcome.STORED, Outcome.DUPLICATE, Outcome.STORED, Outcome.STORED],
    [Outcome.DUPLICATE, Outcome.STORED, Outcome.NOT_APPLIED, Outcome.STORED, Outcome.STORED, Outcome.DUPLICATE],
    [Outcome.STORED],
    [Outcome.STORED],
]


def stored_rows(engine: Engine) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    """Every event (in arrival order) and every task row, timestamps as aware UTC (SQLite hands them back naive)."""
    events, records = TaskEvent.__table__, TaskRecord.__table__  # type: ignore[attr-defined]
    with engine.connect() as connection:
        event_rows = [
            (row.event_id, row.task_id, row.agent, row.kind, row.applied, utc(row.received_at), row.payload)
            for row in connection.execute(sa.select(events).order_by(events.c.seq))
        ]
        record_rows = [
            (
                row.task_id,
                row.context_id,
                row.state,
                row.agent,
                utc(row.created_at),
                utc(row.updated_at),
                utc(row.status_timestamp),
                row.snapshot,
            )
            for row in connection.execute(sa.select(records).order_by(records.c.task_id))
        ]
    return event_rows, record_rows


def test_postgresql_writes_the_rows_sqlite_writes(postgres_engine: Engine, sqlite_engine: Engine) -> None:
    """PostgreSQL's statements and the portable ones agree row for row, column for column, on the same batches:
    duplicates inside and across batches reported and stored once, a refused event kept, timestamps exact."""
    for engine in (postgres_engine, sqlite_engine):
        store = TaskStore(engine)
        assert [store.record_many(batch) for batch in BATCHES] == OUTCOMES
        everything = [incoming for batch in BATCHES for incoming in batch]
        assert store.record_many(everything) == [Outcome.DUPLICATE] * len(everything)
    on_postgres, on_sqlite = stored_rows(postgres_engine), stored_rows(sqlite_engine)
    assert [row[0] for row in on_postgres[0]] == ["e1", "e2", "e3", "e4", "e5", "e6", "e7", "e8", "e9", "e10"]
    assert [row[4] for row in on_postgres[0]] == [True, True, True, True, True, False, True, True, True, True]
    assert [(row[0], row[1], row[2]) for row in on_postgres[1]] == [
        ("t1", "ctx", "TASK_STATE_COMPLETED"),
        ("t2", "ctx", "TASK_STATE_FAILED"),
        ("t3", "ctx-3", "TASK_STATE_WORKING"),
        ("t4", None, "TASK_STATE_COMPLETED"),
    ]
    assert on_postgres == on_sqlite
    snapshot = Task.from_json(str(on_postgres[1][0][7]))
    assert snapshot.status.state is TaskState.COMPLETED and snapshot.artifacts is not None
    assert snapshot.artifacts[0].parts[0].text is not None and "𝄞" in snapshot.artifacts[0].parts[0].text


def waiting_on_a_lock(engine: Engine) -> bool:
    with engine.connect() as connection:
        query = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
        return bool(connection.exec_driver_sql(query).scalar())


def test_a_second_writer_racing_for_the_same_events_records_each_once(postgres_engine: Engine) -> None:
    """Two replicas given the same events (a redelivery to another member of a shared subscription): the second
    waits on the first's transaction, then reports its events DUPLICATE, applying nothing twice, whether their task
    was stored before (locked rows) or is new in both batches. Its read of known event ids saw the table as its
    statement began, before the first committed, so it is the unique event id that refuses its insert, and the
    store's fallback (one event per transaction) that finds each stored."""
    first, second = (
        TaskStore(postgres_engine),
        TaskStore(make_engine(postgres_engine.url.render_as_string(hide_password=False))),
    )
    assert first.record_many(BATCHES[0]) == OUTCOMES[0]
    for batch, stored in (
        (BATCHES[1][1:4], "t1 and t2 exist"),
        ([arrival("n1", StreamResponse(task=Task(id="t9", status=TaskStatus(state=TaskState.SUBMITTED))), 20)], "new"),
    ):
        outcomes: list[Outcome] = []
        with postgres_engine.begin() as connection:
            assert Outcome.DUPLICATE not in write_batch(connection, batch), stored
            racer = threading.Thread(target=lambda: outcomes.extend(second.record_many(batch)))  # noqa: B023 (joined below)
            racer.start()
            deadline = time.monotonic() + 30
            while not waiting_on_a_lock(postgres_engine) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert waiting_on_a_lock(postgres_engine), f"the second writer never waited ({stored})"
        racer.join(timeout=60)
        assert not racer.is_alive()
        assert outcomes == [Outcome.DUPLICATE] * len(batch), stored
    event_rows, record_rows = stored_rows(postgres_engine)
    event_ids = [row[0] for row in event_rows]
    assert sorted(event_ids) == sorted(set(event_ids)) == ["e1", "e2", "e3", "e4", "e5", "e6", "e7", "n1"]
    states = {row[0]: row[2] for row in record_rows}
    assert states == {"t1": "TASK_STATE_COMPLETED", "t2": "TASK_STATE_FAILED", "t9": "TASK_STATE_SUBMITTED"}
    second.engine.dispose()


def test_the_stores_postgresql_sessions_plan_each_run_for_its_values(postgres_engine: Engine) -> None:
    """A generic plan kept from when the tables were small scans them whole (mesh_taskstore.db._postgres_engine)."""
    for _ in range(2):  # the pool's connection, and again once it has been checked in and out
        with postgres_engine.connect() as connection:
            assert connection.exec_driver_sql("SHOW plan_cache_mode").scalar() == "force_custom_plan"
