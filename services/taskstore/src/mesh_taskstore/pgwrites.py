"""A batch's statements on PostgreSQL: one read, one write, whatever the batch's size.

Each statement's text is fixed (ids and each column's values travel as arrays), so psycopg prepares it after a few
runs and the server parses it once (it still plans each run for its values: `db._postgres_engine`); and the batch
costs two round trips inside its transaction instead of one per statement. The rows written are those `writes`
builds for every database."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from sqlalchemy.engine import Connection

from mesh_taskstore.driver import execute

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
    FROM unnest(
        %(event_event_id)b::varchar[], %(event_task_id)b::varchar[], %(event_agent)b::varchar[],
        %(event_kind)b::varchar[], %(event_applied)b::boolean[], %(event_received_at)b::timestamptz[],
        %(event_payload)b::text[]
    ) WITH ORDINALITY AS e(event_id, task_id, agent, kind, applied, received_at, payload, position)
    ORDER BY position
), new_tasks AS (
    INSERT INTO task_record (task_id, agent, created_at, state, context_id, updated_at, status_timestamp, snapshot)
    SELECT * FROM unnest(
        %(new_task_id)b::varchar[], %(new_agent)b::varchar[], %(new_created_at)b::timestamptz[],
        %(new_state)b::varchar[], %(new_context_id)b::varchar[], %(new_updated_at)b::timestamptz[],
        %(new_status_timestamp)b::timestamptz[], %(new_snapshot)b::text[]
    )
)
UPDATE task_record AS r
SET state = c.state, context_id = c.context_id, updated_at = c.updated_at,
    status_timestamp = c.status_timestamp, snapshot = c.snapshot
FROM unnest(
    %(changed_task_id)b::varchar[], %(changed_state)b::varchar[], %(changed_context_id)b::varchar[],
    %(changed_updated_at)b::timestamptz[], %(changed_status_timestamp)b::timestamptz[], %(changed_snapshot)b::text[]
) AS c(task_id, state, context_id, updated_at, status_timestamp, snapshot)
WHERE r.task_id = c.task_id
"""
"""The batch's events (in arrival order: their `seq`), new tasks and changed tasks in one statement, each column an
array in PostgreSQL's binary format (the server copies the values in; JSON rows cost it half as much again to parse
and the store more to build). The new and the changed tasks are apart by construction (a row read under lock is
changed, one not found is new), so the insert and the update never meet the same row."""

Row = tuple[str, str | None, datetime | None, datetime | None, datetime | None, str | None]
"""A locked task row: task_id, agent, created_at, updated_at, status_timestamp, snapshot."""


def read(connection: Connection, task_ids: list[str], event_ids: list[str]) -> tuple[list[Row], set[str]]:
    """The batch's stored task rows (locked) and its event ids already stored."""
    rows: list[Row] = []
    seen: set[str] = set()
    for is_task, key, *columns in execute(connection, READ, {"task_ids": task_ids, "event_ids": event_ids}):
        if is_task:
            rows.append((key, *columns))
        else:
            seen.add(key)
    return rows, seen


def write(
    connection: Connection,
    events: Sequence[Mapping[str, object]],
    new_tasks: Sequence[Mapping[str, object]],
    changed_tasks: Sequence[Mapping[str, object]],
) -> None:
    """Insert the events and the new tasks and update the changed tasks, in one statement."""
    parameters: dict[str, list[object]] = {}
    for prefix, rows, columns in (
        ("event_", events, EVENT_COLUMNS),
        ("new_", new_tasks, NEW_TASK_COLUMNS),
        ("changed_", changed_tasks, CHANGED_TASK_COLUMNS),
    ):
        for name in columns:
            parameters[prefix + name] = [row[name] for row in rows]
    execute(connection, WRITE, parameters)
