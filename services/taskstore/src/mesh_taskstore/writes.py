"""One batch of events written in one transaction: SQLAlchemy Core statements, compiled once and run on the driver's
cursor (`driver`).

The write path is the store's hot loop (four or more events per task, every task of the mesh), so it stays off the
ORM: building and flushing an ORM object per event and per task cost several times the events' own decoding. Here a
batch is a fixed handful of statements whatever its size. Portably (SQLite): one read of the known event ids, one
read (locked where the database can) of the batch's task rows, one executemany insert of the events, one executemany
insert of the new tasks, one executemany update of the changed ones. On PostgreSQL (`pgwrites`): one read of both,
the task rows locked, and one statement writing all three, each prepared once by psycopg. The transaction is on the
store's one writing connection (`db.Writer`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from a2amesh.models import Task
from mesh_taskstore import pgwrites
from mesh_taskstore.apply import apply_event, kind_of
from mesh_taskstore.db import TaskEvent, TaskRecord, on_psycopg, utc
from mesh_taskstore.driver import RowWrite, select_in, write_rows
from mesh_taskstore.incoming import Incoming, Outcome

log = logging.getLogger(__name__)

EVENTS: sa.Table = TaskEvent.__table__  # type: ignore[attr-defined]
RECORDS: sa.Table = TaskRecord.__table__  # type: ignore[attr-defined]

_UPDATE_RECORD = (
    RECORDS.update()
    .where(RECORDS.c.task_id == sa.bindparam("b_task_id"))
    .values(
        state=sa.bindparam("state"),
        context_id=sa.bindparam("context_id"),
        updated_at=sa.bindparam("updated_at"),
        status_timestamp=sa.bindparam("status_timestamp"),
        snapshot=sa.bindparam("snapshot"),
    )
)

_KNOWN_EVENT_IDS = sa.select(EVENTS.c.event_id).where(EVENTS.c.event_id.in_(sa.bindparam("ids", expanding=True)))
_TASK_ROWS = (
    sa.select(
        RECORDS.c.task_id,
        RECORDS.c.agent,
        RECORDS.c.created_at,
        RECORDS.c.updated_at,
        RECORDS.c.status_timestamp,
        RECORDS.c.snapshot,
    )
    .where(RECORDS.c.task_id.in_(sa.bindparam("ids", expanding=True)))
    .with_for_update()
)
"""The batch's reads, built once (an expanding IN takes any number of ids) and compiled once for each number of ids
(`driver.select_in`): building them per batch was a tenth of the write path's CPU."""
_ROW_WRITES = {
    "events": RowWrite(EVENTS, EVENTS.insert().values({name: sa.bindparam(name) for name in pgwrites.EVENT_COLUMNS})),
    "new_tasks": RowWrite(
        RECORDS, RECORDS.insert().values({name: sa.bindparam(name) for name in pgwrites.NEW_TASK_COLUMNS})
    ),
    "changed_tasks": RowWrite(RECORDS, _UPDATE_RECORD),
}
"""The portable statements that write a batch's rows (the columns of PostgreSQL's own statements, `pgwrites`, so
both write the same rows)."""


@dataclass
class _TaskRow:
    """A task's row while a batch is applied: the snapshot as a model, written back once at the end."""

    task: Task
    agent: str
    created_at: datetime
    updated_at: datetime
    """When the task's latest event was received; it never moves backward (a listing's pages rely on that)."""
    status_timestamp: datetime
    exists: bool
    changed: bool = False

    def values(self, written: dict[str, tuple[str, Task]]) -> dict[str, object]:
        """The row's columns; its snapshot's JSON is kept in `written` with the model it came from."""
        snapshot = self.task.to_json()
        written[self.task.id] = (snapshot, self.task)
        return {
            "state": self.task.status.state.value,
            "context_id": self.task.context_id,
            "updated_at": self.updated_at,
            "status_timestamp": self.status_timestamp,
            "snapshot": snapshot,
        }


class SnapshotMemo:
    """The snapshots the last batch wrote, with their models. A task's events often straddle two batches (its
    first events in one, its last in the next), and parsing its snapshot back costs more than reading it: a stored
    snapshot equal, character for character, to one written here is the model kept; one that differs (another
    writer's since) is parsed."""

    def __init__(self) -> None:
        self.written: dict[str, tuple[str, Task]] = {}

    def task(self, task_id: str, snapshot: str) -> Task:
        known = self.written.get(task_id)
        return known[1] if known is not None and known[0] == snapshot else Task.from_json(snapshot)


def write_batch(connection: Connection, batch: Sequence[Incoming], memo: SnapshotMemo | None = None) -> list[Outcome]:
    """Add the batch's events and apply them to their tasks in `connection`'s transaction (the caller commits).
    Events are applied in order in memory, so a batch may hold several events of one task, or one event twice.
    `memo` keeps the snapshots written for the next batch (its size is one batch's tasks)."""
    memo = memo or SnapshotMemo()
    on_postgres = on_psycopg(connection.dialect)
    event_ids = list({incoming.event_id for incoming in batch})
    task_ids = list({incoming.task_id for incoming in batch})
    if on_postgres:
        found, seen = pgwrites.read(connection, task_ids, event_ids)
    else:
        seen = {event_id for (event_id,) in select_in(connection, _KNOWN_EVENT_IDS, event_ids)}
        found = select_in(connection, _TASK_ROWS, task_ids)
    rows = {
        task_id: _TaskRow(memo.task(task_id, snapshot), agent, created, updated, status_at, exists=True)
        for task_id, agent, created, updated, status_at, snapshot in found
    }
    events: list[dict[str, object]] = []
    outcomes: list[Outcome] = []
    for incoming in batch:
        if incoming.event_id in seen:
            outcomes.append(Outcome.DUPLICATE)
            continue
        seen.add(incoming.event_id)
        outcome, event_row = _apply_one(incoming, rows)
        events.append(event_row)
        outcomes.append(outcome)
    written: dict[str, tuple[str, Task]] = {}
    new = [
        {"task_id": row.task.id, "agent": row.agent, "created_at": row.created_at, **row.values(written)}
        for row in rows.values()
        if row.changed and not row.exists
    ]
    changed = [{"task_id": row.task.id, **row.values(written)} for row in rows.values() if row.changed and row.exists]
    if on_postgres:
        if events or new or changed:
            pgwrites.write(connection, events, new, changed)
    else:
        _write_rows(connection, events, new, changed)
    memo.written = written
    return outcomes


def _write_rows(
    connection: Connection,
    events: list[dict[str, object]],
    new: list[dict[str, object]],
    changed: list[dict[str, object]],
) -> None:
    """The batch's rows in portable statements: the events' insert, the new tasks' insert, the changed tasks'
    update, each one executemany."""
    for name, rows in (("events", events), ("new_tasks", new), ("changed_tasks", changed)):
        if rows:
            write_rows(connection, _ROW_WRITES[name], rows)


def _apply_one(incoming: Incoming, rows: dict[str, _TaskRow]) -> tuple[Outcome, dict[str, object]]:
    """Apply one event to its task's row; the event's own row to insert (kept whether applied or not)."""
    task_id = incoming.task_id
    now = utc(incoming.received_at)
    row = rows.get(task_id)
    result = apply_event(row.task if row is not None else None, incoming.event)
    event_row: dict[str, object] = {
        "event_id": incoming.event_id,
        "task_id": task_id,
        "agent": incoming.agent,
        "kind": kind_of(incoming.event).value,
        "applied": result.applied,
        "received_at": now,
        "payload": incoming.wire or incoming.event.to_json(),
    }
    if not result.applied:
        log.warning(
            "%s (event %s kept, not applied)",
            result.note,
            incoming.event_id,
            extra={"task_id": task_id, "agent": incoming.agent},
        )
        return Outcome.NOT_APPLIED, event_row
    if row is None:
        row = rows[task_id] = _TaskRow(result.task, incoming.agent, now, now, now, exists=False)
    if result.status is not None:
        row.status_timestamp = utc(result.status.timestamp) if result.status.timestamp else now
    row.task = result.task
    if utc(row.updated_at) < now:  # never backward: store replicas receive a task's events on their own clocks
        row.updated_at = now
    row.changed = True
    return Outcome.STORED, event_row
