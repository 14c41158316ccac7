"""A batch's statements on PostgreSQL: one read, one write, whatever the batch's size.

Each statement's text is fixed (ids travel as arrays, rows as one JSON array), so psycopg prepares it after a few
runs and the server stops parsing and planning it per batch; and the batch costs two round trips inside its
transaction instead of one per statement. The rows written are those `writes` builds for every database."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

from sqlalchemy.engine import Connection

READ = """
WITH locked AS (
    SELECT task_id, agent, created_at, updated_at, status_timestamp, snapshot
    FROM task_record WHERE task_id = ANY(%(task_ids)s::varchar[])
    FOR UPDATE
)
SELECT true, task_id, agent, created_at, updated_at, status_timestamp, snapshot FROM locked
UNION ALL
SELECT false, event_id, NULL, NULL, NULL, NULL, NULL FROM task_event WHERE event_id = ANY(%(event_ids)s::varchar[])
"""
"""The batch's task rows, locked for the transaction, and which of its event ids are stored already: one
statement, where the two reads were two round trips."""

EVENT_COLUMNS = ("event_id", "task_id", "agent", "kind", "applied", "received_at", "payload")
NEW_TASK_COLUMNS = (
    "task_id",
    "agent",
    "created_at",
    "state",
    "context_id",
    "updated_at",
    "status_timestamp",
    "snapshot",
)
CHANGED_TASK_COLUMNS = ("task_id", "state", "context_id", "updated_at", "status_timestamp", "snapshot")

WRITE = """
WITH new_events AS (
    INSERT INTO task_event (event_id, task_id, agent, kind, applied, received_at, payload)
    SELECT event_id, task_id, agent, kind, applied, received_at, payload
    FROM ROWS FROM (json_to_recordset(%(events)s::json) AS (
        event_id varchar, task_id varchar, agent varchar, kind varchar, applied boolean, received_at timestamptz,
        payload text
    )) WITH ORDINALITY AS e(event_id, task_id, agent, kind, applied, received_at, payload, position)
    ORDER BY position
), new_tasks AS (
    INSERT INTO task_record (task_id, agent, created_at, state, context_id, updated_at, status_timestamp, snapshot)
    SELECT task_id, agent, created_at, state, context_id, updated_at, status_timestamp, snapshot
    FROM json_to_recordset(%(new_tasks)s::json) AS t(
        task_id varchar, agent varchar, created_at timestamptz, state varchar, context_id varchar,
        updated_at timestamptz, status_timestamp timestamptz, snapshot text
    )
)
UPDATE task_record AS r
SET state = c.state, context_id = c.context_id, updated_at = c.updated_at,
    status_timestamp = c.status_timestamp, snapshot = c.snapshot
FROM json_to_recordset(%(changed_tasks)s::json) AS c(
    task_id varchar, state varchar, context_id varchar, updated_at timestamptz, status_timestamp timestamptz,
    snapshot text
)
WHERE r.task_id = c.task_id
"""
"""The batch's events (in arrival order: their `seq`), new tasks and changed tasks in one statement. The new and
the changed tasks are apart by construction (a row read under lock is changed, one not found is new), so the
insert and the update never meet the same row."""

Row = tuple[str, str | None, datetime | None, datetime | None, datetime | None, str | None]
"""A locked task row: task_id, agent, created_at, updated_at, status_timestamp, snapshot."""


def read(connection: Connection, task_ids: list[str], event_ids: list[str]) -> tuple[list[Row], set[str]]:
    """The batch's stored task rows (locked) and its event ids already stored."""
    rows: list[Row] = []
    seen: set[str] = set()
    result = connection.exec_driver_sql(READ, {"task_ids": task_ids, "event_ids": event_ids})
    for is_task, key, *columns in result:
        if is_task:
            rows.append((key, *columns))
        else:
            seen.add(key)
    return rows, seen


def write(
    connection: Connection,
    events: Sequence[Mapping[str, object]],
    new_tasks: Iterable[Mapping[str, object]],
    changed_tasks: Iterable[Mapping[str, object]],
) -> None:
    """Insert the events and the new tasks and update the changed tasks, in one statement."""
    connection.exec_driver_sql(
        WRITE,
        {
            "events": _json_rows(events, EVENT_COLUMNS),
            "new_tasks": _json_rows(new_tasks, NEW_TASK_COLUMNS),
            "changed_tasks": _json_rows(changed_tasks, CHANGED_TASK_COLUMNS),
        },
    )


def _json_rows(rows: Iterable[Mapping[str, object]], columns: Sequence[str]) -> str:
    """`rows` as a JSON array of objects: timestamps in ISO 8601 with their offset (exact to the microsecond, as
    PostgreSQL keeps them), the rest as JSON has them."""
    return json.dumps(
        [{name: _json_value(row[name]) for name in columns} for row in rows], ensure_ascii=False, check_circular=False
    )


def _json_value(value: object) -> object:
    return value.isoformat() if isinstance(value, datetime) else value
