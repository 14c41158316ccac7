"""The store's writing connection (mesh_taskstore.db.Writer) and its statements on the driver
(mesh_taskstore.driver), on a real SQLite file and a real PostgreSQL: a connection the database dropped or could not
serve is replaced, with nothing committed, so the consumer's retry records the batch once; driver errors reach the
store as SQLAlchemy's; SQLite's timestamps are the text SQLAlchemy writes."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlmodel import SQLModel

from a2amesh.models import StreamResponse, Task, TaskState, TaskStatus
from devstack.processes import free_port
from mesh_taskstore.db import TaskEvent, TaskOwner, TaskRecord, create_tables, make_engine
from mesh_taskstore.driver import _padded, sqlite_timestamp, write_rows
from mesh_taskstore.store import Incoming, Outcome, Owner, TaskStore
from mesh_taskstore.writes import _ROW_WRITES

T0 = datetime(2025, 1, 1, tzinfo=UTC)
TABLES = [TaskRecord.__table__, TaskEvent.__table__, TaskOwner.__table__]  # type: ignore[attr-defined]


def fresh_store(url: str) -> TaskStore:
    engine = make_engine(url)
    SQLModel.metadata.drop_all(engine, tables=TABLES)
    create_tables(engine)
    return TaskStore(engine)


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[TaskStore]:
    store = fresh_store(f"sqlite:///{tmp_path / 'store.db'}")

    @sa.event.listens_for(store.engine, "connect")
    def _wait_briefly(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute("PRAGMA busy_timeout = 200")  # a locked database fails fast, not after 15 s

    yield store
    store.close()
    store.engine.dispose()


@pytest.fixture
def postgres_store(postgres_url: str) -> Iterator[TaskStore]:
    store = fresh_store(postgres_url)
    yield store
    store.close()
    store.engine.dispose()


def arrival(event_id: str, task_id: str, seconds: float = 0) -> Incoming:
    task = Task(id=task_id, context_id="ctx", status=TaskStatus(state=TaskState.SUBMITTED))
    return Incoming(event_id, "acme/default/agent-x", StreamResponse(task=task), T0 + timedelta(seconds=seconds))


def stored_event_ids(engine: Engine) -> list[str]:
    with engine.connect() as connection:
        return list(connection.execute(sa.text("SELECT event_id FROM task_event ORDER BY seq")).scalars())


def test_a_locked_sqlite_database_fails_the_batch_whole_and_a_new_connection_records_it_once(
    sqlite_store: TaskStore, tmp_path: Path
) -> None:
    assert sqlite_store.record_many([arrival("e1", "t1")]) == [Outcome.STORED]
    first = sqlite_store.writer.connection
    blocker = sqlite3.connect(tmp_path / "store.db", timeout=1)
    blocker.execute("BEGIN EXCLUSIVE")  # the database is unavailable to the store: it can neither read nor write
    try:
        with pytest.raises(OperationalError):
            sqlite_store.record_with_owners([arrival("e2", "t2", 1)], [("t2", Owner("alice"))])
        assert sqlite_store.writer.connection is None  # discarded: the retry connects again
    finally:
        blocker.rollback()
        blocker.close()
    outcomes, claimed = sqlite_store.record_with_owners([arrival("e2", "t2", 1)], [("t2", Owner("alice"))])
    assert (outcomes, claimed) == ([Outcome.STORED], [True])
    assert sqlite_store.writer.connection is not None and sqlite_store.writer.connection is not first
    assert stored_event_ids(sqlite_store.engine) == ["e1", "e2"]
    assert sqlite_store.owner_of("t2") == Owner("alice")


def test_a_postgresql_connection_the_server_dropped_is_replaced_and_the_batch_recorded_once(
    postgres_store: TaskStore, caplog: pytest.LogCaptureFixture
) -> None:
    """The writer holds its connection between batches with no pre-ping: when the server ends it (a restart, a
    failover, an idle timeout), the next batch fails at its first statement with nothing committed and runs again
    on a new connection, without waiting for the consumer's retry."""
    assert postgres_store.record_many([arrival("e1", "t1")]) == [Outcome.STORED]
    dropped = writer_backend(postgres_store)
    with postgres_store.engine.connect() as admin:
        assert admin.exec_driver_sql(f"SELECT pg_terminate_backend({dropped})").scalar() is True
    with caplog.at_level(logging.INFO, logger="mesh_taskstore.db"):
        outcomes, claimed = postgres_store.record_with_owners(
            [arrival("e2", "t2", 1), arrival("e1", "t1", 2)], [("t2", Owner("alice"))]
        )
    assert (outcomes, claimed) == ([Outcome.STORED, Outcome.DUPLICATE], [True])
    assert "writing on a new one" in caplog.text
    assert writer_backend(postgres_store) != dropped
    assert stored_event_ids(postgres_store.engine) == ["e1", "e2"]
    assert postgres_store.owner_of("t2") == Owner("alice")


def test_a_postgresql_server_that_stays_away_fails_the_batch_for_the_consumer_to_retry(
    postgres_store: TaskStore,
) -> None:
    """Replaced once, not for ever: when the new connection cannot be made either, the batch fails with the
    database unavailable (OperationalError), which the consumer retries until it comes back."""
    postgres_store.record_many([arrival("e1", "t1")])
    with postgres_store.engine.connect() as admin:
        admin.exec_driver_sql(f"SELECT pg_terminate_backend({writer_backend(postgres_store)})")
    postgres_store.engine.pool.dispose()
    unreachable = postgres_store.engine.url.set(port=free_port())  # nothing listens there: connecting fails
    postgres_store.writer.engine = make_engine(unreachable)
    try:
        with pytest.raises(OperationalError):
            postgres_store.record_many([arrival("e2", "t2", 1)])
        assert postgres_store.writer.connection is None
    finally:
        postgres_store.writer.engine.dispose()
        postgres_store.writer.engine = postgres_store.engine
    assert postgres_store.record_many([arrival("e2", "t2", 1)]) == [Outcome.STORED]
    assert stored_event_ids(postgres_store.engine) == ["e1", "e2"]


def writer_backend(store: TaskStore) -> int:
    """The server process of the store's writing connection."""
    with store.writer.transaction() as connection:
        return int(connection.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_a_driver_error_is_sqlalchemys_and_keeps_the_connection(database: str, request: pytest.FixtureRequest) -> None:
    """The statements run on the driver's cursor; its errors reach the store as SQLAlchemy's (the store falls back
    to one event at a time on IntegrityError, retries on OperationalError), and a refused row ends its transaction
    only: the connection is sound and kept."""
    store: TaskStore = request.getfixturevalue(f"{database}_store" if database == "sqlite" else "postgres_store")
    store.record_many([arrival("e1", "t1")])
    kept = store.writer.connection
    row = {
        "event_id": "e1",
        "task_id": "t1",
        "agent": "acme/default/agent-x",
        "kind": "task",
        "applied": True,
        "received_at": T0,
        "payload": "{}",
    }
    with pytest.raises(IntegrityError), store.writer.transaction() as connection:
        write_rows(connection, _ROW_WRITES["events"], [row])
    assert store.writer.connection is kept
    assert store.record_many([arrival("e2", "t2", 1)]) == [Outcome.STORED]
    assert stored_event_ids(store.engine) == ["e1", "e2"]


@pytest.mark.parametrize(
    "value",
    [
        datetime(2025, 1, 1, 12, 30, 15, 123456, tzinfo=UTC),
        datetime(2025, 1, 1, 12, 30, 15, tzinfo=UTC),  # no microseconds: still six digits
        datetime(5, 2, 3, 4, 5, 6, 7, tzinfo=UTC),  # a four-digit year
        datetime(2025, 6, 1, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=2))),  # fields as given
        datetime(2025, 6, 1, 8, 0, 0, 1),  # naive
        None,
    ],
)
def test_sqlite_timestamps_are_the_text_sqlalchemy_writes(value: datetime | None) -> None:
    dialect = sqlite.dialect()
    sqlalchemys = sa.DateTime(timezone=True).dialect_impl(dialect).bind_processor(dialect)
    assert sqlalchemys is not None
    assert sqlite_timestamp(value) == sqlalchemys(value)


def test_a_connection_closed_under_the_writer_is_replaced_and_the_batch_recorded_once(sqlite_store: TaskStore) -> None:
    """The driver's own connection closed beneath SQLAlchemy's: the driver raises its own error at the first
    cursor, which reaches the store as SQLAlchemy's (a disconnect), so the batch runs again on a new connection
    rather than failing event by event (FAILED events would be acknowledged, and lost)."""
    assert sqlite_store.record_many([arrival("c1", "t1")]) == [Outcome.STORED]
    first = sqlite_store.writer.connection
    assert first is not None
    first.connection.dbapi_connection.close()
    assert sqlite_store.record_many([arrival("c2", "t2", 1), arrival("c3", "t3", 2)]) == [Outcome.STORED] * 2
    assert sqlite_store.writer.connection is not first
    assert stored_event_ids(sqlite_store.engine) == ["c1", "c2", "c3"]


def test_a_closed_writer_refuses_as_an_unavailable_database(sqlite_store: TaskStore) -> None:
    """A batch written after the store closed its writer (a write still in flight at shutdown) fails as the
    database being unavailable, which the consumer leaves unacknowledged for redelivery, never as FAILED events."""
    sqlite_store.close()
    with pytest.raises(OperationalError):
        sqlite_store.record_many([arrival("z1", "t1")])
    assert stored_event_ids(sqlite_store.engine) == []


def test_reads_by_id_take_any_number_of_ids(sqlite_store: TaskStore, postgres_store: TaskStore) -> None:
    """The reads by id are compiled for a few counts of ids (powers of two, then multiples of 256), the last id
    repeated to fill them: every count reads the same rows."""
    assert [_padded(n) for n in (1, 2, 3, 5, 9, 256, 257, 300, 513)] == [1, 2, 4, 8, 16, 256, 512, 512, 768]
    for store in (sqlite_store, postgres_store):
        store.record_many([arrival(f"n{i}", f"t{i}", i) for i in range(9)])
        for count in (1, 2, 3, 5, 8, 9, 300):
            claims = [(f"t{i}", Owner("alice")) for i in range(count)]
            assert store.claim_many(claims) == [True] * count
            assert store.claim_many([(f"t{i}", Owner("bob")) for i in range(count)]) == [False] * count
