"""Persistence: recording events idempotently and answering reads. Every method is synchronous and opens its own
session, so callers run it in a worker thread (`asyncio.to_thread`) and the event loop never waits on the disk."""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlmodel import Session, col, select

from a2amesh.models import LIST_TASKS_DEFAULT_PAGE_SIZE, StreamResponse, Task, TaskState, TaskStatus
from mesh_taskstore import db
from mesh_taskstore.apply import EventKind, trim_wire
from mesh_taskstore.db import TaskEvent, TaskOwner, TaskRecord, utc
from mesh_taskstore.driver import RowWrite, select_in, write_rows
from mesh_taskstore.incoming import Incoming, Outcome, no_ack
from mesh_taskstore.writes import SnapshotMemo, write_batch

log = logging.getLogger(__name__)


def storable(text: str) -> bool:
    """Whether a database can be asked about `text`: a lone surrogate encodes to no UTF-8, and PostgreSQL's text
    holds no NUL (the mesh's own ids have neither). The routes check an id with it before any query, so SQLite and
    PostgreSQL answer alike: a read by such an id finds nothing (on SQLite too, even for an agent's event that
    carried one in its JSON)."""
    if "\x00" in text:
        return False
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


@dataclass(frozen=True)
class StoredTask:
    """A task snapshot and the agent that reported it."""

    task: Task
    agent: str


@dataclass(frozen=True)
class Cursor:
    """Where a page ends, in the list's order (updated_at desc, task_id desc). Keyset rather than offset, so a
    task arriving between two page reads does not shift later pages and repeat their first rows.

    `floor` is the oldest updated_at among the listing's matches when its first page was read. Later pages stop
    there, which keeps a listing's last page from walking every older row of the table down the updated_at index
    to find none (a statusTimestampAfter filter is checked row by row on that walk). A row's updated_at never moves
    backward (`writes`), so a row that matched at the first page stays above the floor. A row written after the first
    page carries the time its event was received, in practice well after the oldest match; one received earlier
    still, yet written only after that read, may be left out, as a keyset listing may leave out a row that changes
    while it pages (for the reconciler, a needless republish at worst: the store keeps a final state)."""

    updated_at: datetime
    task_id: str
    floor: datetime | None = None

    def encode(self) -> str:
        fields = {"u": utc(self.updated_at).isoformat(), "i": self.task_id}
        if self.floor is not None:
            fields["f"] = utc(self.floor).isoformat()
        raw = json.dumps(fields, separators=(",", ":"))
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> Cursor:
        """Parse a token this class made (one without a floor too); ValueError for anything else."""
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            data = json.loads(raw)
            floor = utc(datetime.fromisoformat(data["f"])) if data.get("f") is not None else None
            task_id = str(data["i"])
            if not storable(task_id):  # PostgreSQL cannot be asked about it (see `storable`)
                raise ValueError("unstorable task id")
            return cls(utc(datetime.fromisoformat(data["u"])), task_id, floor)
        except (binascii.Error, ValueError, TypeError, KeyError, AttributeError, OverflowError) as error:
            raise ValueError("invalid pageToken") from error


@dataclass(frozen=True)
class Owner:
    """A task's creator as the coordinator names it: a principal id and its tenant ("" for none)."""

    principal: str
    tenant: str = ""


@dataclass(frozen=True)
class OwnerClaims:
    """The owners one coordinator message names (task id -> owner), as taken off the broker."""

    owners: tuple[tuple[str, Owner], ...]
    coordinator: str
    ack: Callable[[], Awaitable[None]] = field(default=no_ack, compare=False, repr=False)
    """Tells the broker they are recorded (like an event's)."""


@dataclass(frozen=True)
class TaskQuery:
    """ListTasks filters and page, already validated."""

    context_id: str | None = None
    agents: tuple[str, ...] = ()
    """Only tasks of these agents (org/unit/agent), when any are given: one agent's endpoint lists its own."""
    state: TaskState | None = None
    status_after: datetime | None = None
    page_size: int = LIST_TASKS_DEFAULT_PAGE_SIZE
    cursor: Cursor | None = None
    history_length: int | None = None
    include_artifacts: bool = False
    owner: Owner | None = None
    """Only this owner's tasks; None is an operator's read of every task (the API decides who may)."""


@dataclass(frozen=True)
class TaskPage:
    """One page of tasks, the token of the next one ("" when this is the last) and how many match in all.

    The tasks are kept as wire JSON (dicts), as the store wrote them: the HTTP API sends them on unchanged, and
    parsing each snapshot into a model only to write it back out was most of a listing's cost (issue #18)."""

    wire: list[dict[str, Any]]
    next_page_token: str
    total_size: int

    @property
    def tasks(self) -> list[Task]:
        """The page's tasks as models (for callers in Python; the API sends `wire`)."""
        return [Task.from_wire(task) for task in self.wire]


class TaskStore:
    """The task store's database operations."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.writer = db.Writer(engine)
        """The connection every write of the store runs on (reads take the engine's pool)."""
        self._memo = SnapshotMemo()
        """The last batch's snapshots as models (writes are serial: one writer per store)."""

    def ping(self) -> None:
        """Raise unless the database answers."""
        db.ping(self.engine)

    def close(self) -> None:
        """Let go of the writing connection (before the engine is disposed)."""
        self.writer.close()

    # -- writes ----------------------------------------------------------------------------------------------
    def record(self, incoming: Incoming) -> Outcome:
        """Store one event and apply it to its task, in one transaction; an event id already stored changes
        nothing."""
        return self.record_many([incoming])[0]

    def record_many(self, batch: Sequence[Incoming]) -> list[Outcome]:
        """Record events, in order, in one transaction: one commit (one fsync) and a handful of queries for the
        lot, which is what lets a backlog drain quickly.

        OperationalError (database unavailable) propagates with nothing committed, so the caller can retry.
        Any other failure falls back to one event per transaction, where an event that still fails is logged
        and reported FAILED rather than blocking every event behind it."""
        if not batch:
            return []
        try:
            return self._commit(batch)
        except OperationalError:
            raise
        except Exception:
            if len(batch) > 1:
                log.warning("a batch of %d events failed; recording them one by one", len(batch), exc_info=True)
            return [self._record_one(incoming) for incoming in batch]

    def _record_one(self, incoming: Incoming) -> Outcome:
        for attempt in (1, 2):
            try:
                return self._commit([incoming])[0]
            except OperationalError:
                raise
            except IntegrityError:
                if attempt == 1:
                    continue  # another writer inserted this event or task first: re-read, then it is an update
                log.exception("cannot record event %s; dropped", incoming.event_id)
            except Exception:
                log.exception("cannot record event %s; dropped", incoming.event_id)
                break
        return Outcome.FAILED

    def _commit(self, batch: Sequence[Incoming]) -> list[Outcome]:
        """One transaction for the batch (group commit: one fsync for the lot); see `writes.write_batch`."""
        return self.writer.run(lambda connection: write_batch(connection, batch, self._memo))

    def claim(self, task_id: str, owner: Owner) -> bool:
        """Record `owner` as the task's creator; False if another owner already holds it (never overwritten)."""
        return self.claim_many([(task_id, owner)]) == [True]

    def claim_many(self, claims: Sequence[tuple[str, Owner]]) -> list[bool]:
        """Record task owners in one transaction, whether the task's events are stored yet or not (the owner row
        stands alone until they come). Idempotent: the same owner again is a no-op that answers True (a broker
        redelivery); another owner for a task already owned answers False and changes nothing.

        OperationalError propagates with nothing committed, so the caller can retry."""
        if not claims:
            return []
        try:
            return self.writer.run(lambda connection: _claim_rows(connection, claims))
        except IntegrityError:  # claimed at the same moment by another writer: one by one, against theirs
            if len(claims) == 1:
                return [self.owner_of(claims[0][0]) == claims[0][1]]
            return [self.claim(task_id, owner) for task_id, owner in claims]

    def record_with_owners(
        self, events: Sequence[Incoming], claims: Sequence[tuple[str, Owner]]
    ) -> tuple[list[Outcome], list[bool]]:
        """Record a batch's events and the owners that arrived with them in one transaction: on the deployed
        path nearly every batch carries both, and a second transaction for the owners was a second fixed cost
        (its own fsync) per batch. Answers as `record_many` and `claim_many`; when the joint transaction fails
        for any reason but an unavailable database, it falls back to those two, which isolate the culprit."""
        if not claims:
            return self.record_many(events), []
        try:
            return self.writer.run(
                lambda connection: (
                    write_batch(connection, events, self._memo) if events else [],
                    _claim_rows(connection, claims),
                )
            )
        except OperationalError:
            raise
        except Exception:
            log.info("a joint batch of %d events and %d owners failed; recording them apart", len(events), len(claims))
            return self.record_many(events), self.claim_many(claims)

    def owner_of(self, task_id: str) -> Owner | None:
        with Session(self.engine) as session:
            row = session.get(TaskOwner, task_id)
            return Owner(row.principal, row.tenant) if row is not None else None

    # -- reads -----------------------------------------------------------------------------------------------
    def get(self, task_id: str, owner: Owner | None = None) -> StoredTask | None:
        """The task's current snapshot, or None if no event about it has arrived (or, with `owner`, if that owner
        did not create it: the same None, so a reader cannot tell another caller's task from no task)."""
        with Session(self.engine) as session:
            record = session.get(TaskRecord, task_id)
            if record is None:
                return None
            if owner is not None:
                row = session.get(TaskOwner, task_id)
                if row is None or (row.principal, row.tenant) != (owner.principal, owner.tenant):
                    return None
            return StoredTask(Task.from_json(record.snapshot), record.agent)

    def states(self, task_ids: Sequence[str], owner: Owner | None = None) -> dict[str, str]:
        """The state of each of these tasks the store holds (with `owner`, only of the tasks that owner created, as
        `get`): one SELECT per STATES_CHUNK ids, so a caller checking hundreds of tasks (the coordinator's
        reconciler) costs a request and a few statements, not a request and a session per task. Ids it lacks are
        left out. States come as stored (wire names), so one this version does not know is passed on, not an error."""
        ids = list(dict.fromkeys(task_ids))
        found: dict[str, str] = {}
        with self.engine.connect() as connection:
            for start in range(0, len(ids), STATES_CHUNK):
                for task_id, state, principal, tenant in select_in(
                    connection, _STATE_ROWS, ids[start : start + STATES_CHUNK]
                ):
                    if owner is None or (principal, tenant) == (owner.principal, owner.tenant):
                        found[task_id] = state
        return found

    def events(self, task_id: str) -> list[TaskEvent]:
        """Every event recorded for the task, in arrival order."""
        with Session(self.engine) as session:
            rows = session.exec(select(TaskEvent).where(TaskEvent.task_id == task_id).order_by(col(TaskEvent.seq)))
            return list(rows.all())

    def list_tasks(self, query: TaskQuery) -> TaskPage:
        """One page of tasks matching the filters, newest (last updated) first."""
        filters: list[sa.ColumnElement[bool]] = []
        if query.context_id:
            filters.append(col(TaskRecord.context_id) == query.context_id)
        if query.agents:
            filters.append(col(TaskRecord.agent).in_(query.agents))
        if query.state is not None:
            filters.append(col(TaskRecord.state) == query.state.value)
        if query.status_after is not None:
            filters.append(col(TaskRecord.status_timestamp) > utc(query.status_after))
        if query.owner is not None:
            owned = select(TaskOwner.task_id).where(
                col(TaskOwner.principal) == query.owner.principal, col(TaskOwner.tenant) == query.owner.tenant
            )
            filters.append(col(TaskRecord.task_id).in_(owned))
        updated, task_id = col(TaskRecord.updated_at), col(TaskRecord.task_id)
        page_filters = list(filters)
        if query.cursor is not None:
            page_filters.append(
                sa.or_(
                    updated < query.cursor.updated_at,
                    sa.and_(updated == query.cursor.updated_at, task_id < query.cursor.task_id),
                )
            )
        columns = (updated, task_id, col(TaskRecord.snapshot))
        with Session(self.engine) as session:
            if query.cursor is None:  # the first page: how many match, and the oldest of them (the later pages' floor)
                total, floor = session.exec(select(sa.func.count(), sa.func.min(updated)).where(*filters)).one()
                floor = utc(floor) if floor is not None else None
            else:
                total = session.exec(select(sa.func.count()).select_from(TaskRecord).where(*filters)).one()
                floor = query.cursor.floor
            if floor is not None:
                page_filters.append(updated >= floor)
            rows = (
                session.exec(
                    select(*columns)
                    .where(*page_filters)
                    .order_by(updated.desc(), task_id.desc())
                    .limit(query.page_size + 1)
                ).all()
                if total
                else []
            )
        page, more = rows[: query.page_size], len(rows) > query.page_size
        token = Cursor(utc(page[-1].updated_at), page[-1].task_id, floor).encode() if more and page else ""
        tasks = [trim_wire(json.loads(row.snapshot), query.history_length, query.include_artifacts) for row in page]
        return TaskPage(tasks, token, int(total))


_OWNERS: sa.Table = TaskOwner.__table__  # type: ignore[attr-defined]
_OWNER_ROWS = sa.select(_OWNERS.c.task_id, _OWNERS.c.principal, _OWNERS.c.tenant).where(
    _OWNERS.c.task_id.in_(sa.bindparam("ids", expanding=True))
)
_RECORDS: sa.Table = TaskRecord.__table__  # type: ignore[attr-defined]
_STATE_ROWS = (
    sa.select(_RECORDS.c.task_id, _RECORDS.c.state, _OWNERS.c.principal, _OWNERS.c.tenant)
    .select_from(_RECORDS.outerjoin(_OWNERS, _OWNERS.c.task_id == _RECORDS.c.task_id))
    .where(_RECORDS.c.task_id.in_(sa.bindparam("ids", expanding=True)))
)
"""A task's state and its owner (NULL for none, which only an operator's read sees), by ids."""
STATES_CHUNK = 512
"""Ids per SELECT of `TaskStore.states`: under SQLite's oldest parameter limit (999), and a count the driver
compiles without padding (mesh_taskstore.driver: powers of two to 256, then multiples of 256)."""
_NEW_OWNERS = RowWrite(
    _OWNERS,
    _OWNERS.insert().values({name: sa.bindparam(name) for name in ("task_id", "principal", "tenant", "claimed_at")}),
)


def _claim_rows(connection: sa.Connection, claims: Sequence[tuple[str, Owner]]) -> list[bool]:
    """Insert the owners of tasks nobody owns yet, in `connection`'s transaction; True where the task's owner is
    (now) the one claimed. Through the driver (`mesh_taskstore.driver`): it runs inside the event batch's
    transaction on the hot path."""
    ids = list(dict.fromkeys(task_id for task_id, _ in claims))
    held = {task_id: Owner(principal, tenant) for task_id, principal, tenant in select_in(connection, _OWNER_ROWS, ids)}
    now = utc_now()
    rows: list[dict[str, object]] = []
    answers = []
    for task_id, owner in claims:
        if task_id not in held:
            held[task_id] = owner
            rows.append({"task_id": task_id, "principal": owner.principal, "tenant": owner.tenant, "claimed_at": now})
        answers.append(held[task_id] == owner)
    if rows:
        write_rows(connection, _NEW_OWNERS, rows)
    return answers


def utc_now() -> datetime:
    return datetime.now(UTC)


def status_history(events: list[TaskEvent]) -> list[TaskStatus]:
    """Every status the task went through, in order: the statuses of the applied snapshot and status events,
    with immediate repeats (a snapshot restating the status just set) collapsed."""
    history: list[TaskStatus] = []
    for row in events:
        if not row.applied or row.kind not in (EventKind.TASK, EventKind.STATUS_UPDATE):
            continue
        event = StreamResponse.from_json(row.payload)
        status = event.task.status if event.task is not None else event.status_update.status  # type: ignore[union-attr]
        if history and history[-1] == status:
            continue
        history.append(status)
    return history
