"""Tables and engine. Column types stay portable (text JSON, timezone-aware timestamps, plain strings) so the
same schema runs on SQLite in development and on PostgreSQL in production."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Dialect, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, InterfaceError, OperationalError
from sqlmodel import Field, SQLModel, create_engine

from a2amesh.settings import read_secret

log = logging.getLogger(__name__)

T = TypeVar("T")


def utc(value: datetime) -> datetime:
    """`value` as an aware UTC datetime. SQLite hands timestamps back naive; they were written as UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


SEQ_TYPE = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
"""64-bit on real servers; INTEGER on SQLite, where only `INTEGER PRIMARY KEY` autoincrements (the rowid)."""


class TaskRecord(SQLModel, table=True):
    """The current state of one task: the merged snapshot plus the columns that lists filter and sort on."""

    __tablename__ = "task_record"
    __table_args__ = (sa.Index("ix_task_record_updated_order", "updated_at", "task_id"),)

    task_id: str = Field(primary_key=True)
    context_id: str | None = Field(default=None, index=True)
    state: str = Field(index=True)
    agent: str = Field(description="org/unit/agent of the agent whose event topic first reported the task")
    created_at: datetime = Field(sa_type=sa.DateTime(timezone=True))
    updated_at: datetime = Field(sa_type=sa.DateTime(timezone=True))
    status_timestamp: datetime = Field(
        sa_type=sa.DateTime(timezone=True),
        index=True,
        description="the status's own timestamp, or when we received it if the agent sent none",
    )
    snapshot: str = Field(sa_type=sa.Text, description="the current Task as A2A wire JSON")


class TaskEvent(SQLModel, table=True):
    """One event as received, kept forever: the audit trail and the source of the status history.

    `seq` is the order of arrival (a surrogate key every database can autoincrement); `event_id` is the
    publisher's id and is unique, which is what makes redeliveries harmless."""

    __tablename__ = "task_event"

    seq: int | None = Field(default=None, primary_key=True, sa_type=SEQ_TYPE)
    event_id: str = Field(unique=True, index=True)
    task_id: str = Field(index=True)
    agent: str
    kind: str
    applied: bool = Field(description="false when the event was kept but not applied (it would reopen a task)")
    received_at: datetime = Field(sa_type=sa.DateTime(timezone=True))
    payload: str = Field(sa_type=sa.Text, description="the StreamResponse as A2A wire JSON")


class TaskOwner(SQLModel, table=True):
    """Who created a task through the coordinator (its principal and tenant, "" for none): reads are scoped to it.
    Written once, from the coordinator's owner topic, before or after the task's events; a task with no owner row is
    readable by operators only."""

    __tablename__ = "task_owner"
    __table_args__ = (sa.Index("ix_task_owner_principal_tenant", "principal", "tenant"),)

    task_id: str = Field(primary_key=True)
    principal: str
    tenant: str = ""
    claimed_at: datetime = Field(sa_type=sa.DateTime(timezone=True))


class PushConfig(SQLModel, table=True):
    """A push-notification config of a task (A2A TaskPushNotificationConfig), owned like its task. `delivered_seq`
    is the last event (task_event.seq) the coordinator's delivery worker finished with, delivered or dead-lettered:
    what is still to deliver is derived from the stored events, so no delivery is lost when the coordinator stops."""

    __tablename__ = "push_config"

    task_id: str = Field(primary_key=True)
    config_id: str = Field(primary_key=True)
    url: str
    token: str = ""
    auth_scheme: str = ""
    auth_credentials: str = ""
    delivered_seq: int = Field(default=0, sa_type=SEQ_TYPE)
    created_at: datetime = Field(sa_type=sa.DateTime(timezone=True))


class PushLease(SQLModel, table=True):
    """Which coordinator replica delivers a config's updates, until when: one at a time, so with N replicas each
    update is POSTed once. Renewed while it delivers; another replica takes it once it expires (mesh_taskstore.push)."""

    __tablename__ = "push_lease"

    task_id: str = Field(primary_key=True)
    config_id: str = Field(primary_key=True)
    holder: str
    expires_at: datetime = Field(sa_type=sa.DateTime(timezone=True))


class PushDeadLetter(SQLModel, table=True):
    """A delivery the coordinator gave up on after its last retry: kept for its owner to read (and replay)."""

    __tablename__ = "push_dead_letter"

    seq: int | None = Field(default=None, primary_key=True, sa_type=SEQ_TYPE)
    delivery_id: str = Field(unique=True)
    task_id: str = Field(index=True)
    config_id: str
    url: str
    event_seq: int = Field(sa_type=SEQ_TYPE)
    attempts: int
    error: str
    failed_at: datetime = Field(sa_type=sa.DateTime(timezone=True))


SQLITE_CACHE_KIB = 16 * 1024
"""SQLite's page cache per connection (its default is 2 MiB)."""


class DatabaseSettingsError(ValueError):
    """The database settings name what the store cannot use: said once at startup, naming the setting."""


def database_url(url: str, password_file: Path | None = None) -> URL:
    """The URL the store connects with: MESH_DATABASE_URL, its password (if any) replaced by the content of
    MESH_DATABASE_PASSWORD_FILE when that is set, so that the password is a mounted secret like every other of the
    mesh, never in the environment. Without the file, a password in the URL still works."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        # the parser's message may repeat the URL, password included: not logged
        raise DatabaseSettingsError(
            "MESH_DATABASE_URL is not a database URL (dialect+driver://user@host:port/database)"
        ) from None
    if password_file is None:
        return parsed
    try:
        password = read_secret(password_file)
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else type(error).__name__
        raise DatabaseSettingsError(f"MESH_DATABASE_PASSWORD_FILE={password_file} cannot be read: {reason}") from None
    if not password:
        raise DatabaseSettingsError(f"MESH_DATABASE_PASSWORD_FILE={password_file} is empty")
    return parsed.set(password=password)


def make_engine(url: str | URL, **kwargs: Any) -> Engine:
    """An engine for `url`. For SQLite: the file's directory is created, the connection may be used from
    worker threads (all DB work runs in `asyncio.to_thread`), and WAL lets readers run beside the writer."""
    parsed = make_url(url)
    if on_psycopg(parsed.get_dialect()):
        return _postgres_engine(url, **kwargs)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True, **kwargs)
    database = parsed.database
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 15}, **kwargs)

    @sa.event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        if database and database != ":memory:":
            cursor.execute("PRAGMA journal_mode=WAL")
        # pages the writer touches (random-keyed indexes: event ids, task ids) stay in memory instead of being
        # read back from the OS per batch; only what is touched is allocated, so the idle footprint is unchanged
        cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
        cursor.close()

    return engine


def on_psycopg(dialect: Dialect | type[Dialect]) -> bool:
    """Whether the database is PostgreSQL through psycopg 3: the store's own statements there (`pgwrites`, its
    arrays in binary) and its session setting (`_postgres_engine`) need that driver."""
    return dialect.name == "postgresql" and dialect.driver == "psycopg"


CUSTOM_PLANS_FROM = 120000
"""PostgreSQL 12, the first with `plan_cache_mode`."""


def _postgres_engine(url: str | URL, **kwargs: Any) -> Engine:
    """An engine (psycopg 3, the driver the store's image installs) whose sessions plan each run of a prepared
    statement for its own values (`plan_cache_mode = force_custom_plan`), as PostgreSQL plans an unprepared one.
    psycopg prepares a statement once it has run five times;
    PostgreSQL may then keep one generic plan, made for the tables as they were. Made while the tables were new and
    small, it scanned them whole for every batch until autovacuum analyzed them: a fresh store's cost per batch grew
    with its tables (0.1 -> 0.75 ms of the server's CPU a task over its first 24,000 tasks, offline)."""
    engine = create_engine(url, pool_pre_ping=True, **kwargs)

    @sa.event.listens_for(engine, "connect")
    def _custom_plans(dbapi_connection: Any, _record: Any) -> None:
        if dbapi_connection.info.server_version >= CUSTOM_PLANS_FROM:
            dbapi_connection.execute("SET plan_cache_mode = force_custom_plan")
            dbapi_connection.commit()

    return engine


class Writer:
    """The store's one writing connection, held from one batch to the next: writes are serial (one writer per
    store), so each batch only begins and commits a transaction on it. Checking a connection out of the pool per
    batch (and in, with its reset, and on PostgreSQL the pool's `SELECT 1` pre-ping) was a fifth of the write path.
    Reads (the HTTP API) keep the engine's pool.

    A connection that failed with the database unavailable (or gone: a server restart, a dropped socket) is
    discarded, and the next transaction connects again: at once in `run` when the server had dropped it between
    batches, otherwise on the caller's retry (`consumer._write`)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.connection: Connection | None = None
        self._lock = threading.Lock()
        """Serial anyway in the service (one writer); kept so that no two callers ever share a transaction."""
        self._closed = False

    def run(self, work: Callable[[Connection], T]) -> T:
        """`work` in a transaction on the writing connection, committed when it returns, rolled back if it raises.

        A held connection the server dropped since the last batch (a restart, a failover, an idle timeout) fails at
        the first statement: then `work` runs once more on a new connection, as the pool's pre-ping spared the
        batch before. Nothing of the failed attempt was committed, or, if its commit was what failed, a second
        attempt finds its events stored and changes nothing (events are stored once by id, an owner once)."""
        reused = self.connection is not None
        try:
            with self.transaction() as connection:
                return work(connection)
        except DBAPIError as error:
            if not (reused and error.connection_invalidated):
                raise
            log.info("the database dropped the store's writing connection; writing on a new one")
        try:
            with self.transaction() as connection:
                return work(connection)
        except DBAPIError as error:
            if isinstance(error, OperationalError) or not error.connection_invalidated:
                raise
            # lost again, as whatever the driver called it: the database is unavailable, for the caller to retry
            raise OperationalError(error.statement, error.params, error.orig, connection_invalidated=True) from error

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A transaction on the writing connection, committed when the block ends, rolled back if it raises."""
        with self._lock:
            if self._closed:  # the consumer takes this as the database gone: unacknowledged, redelivered next start
                raise OperationalError("writing a batch", None, RuntimeError("the store's writer is closed"))
            connection = self.connection
            if connection is None or connection.closed or connection.invalidated:
                connection = self.connection = self.engine.connect()
            try:
                with connection.begin():
                    yield connection
            except BaseException as error:
                if _lost(connection, error):
                    self._discard(connection)
                raise

    def close(self) -> None:
        """Return the connection to the pool (the engine's `dispose` then closes it); no write opens another."""
        with self._lock:
            self._closed = True
            if self.connection is not None:
                with contextlib.suppress(Exception):
                    self.connection.close()
                self.connection = None

    def _discard(self, connection: Connection) -> None:
        """Close the connection for good (not back to the pool: it may be broken); the next batch opens another."""
        self.connection = None
        with contextlib.suppress(Exception):
            connection.invalidate()
        with contextlib.suppress(Exception):
            connection.close()


def _lost(connection: Connection, error: BaseException) -> bool:
    """Whether the connection cannot be trusted after `error`: the database was unavailable (or went away), or
    the driver raised its own error where SQLAlchemy's was expected (a connection closed under it)."""
    if isinstance(error, (OperationalError, InterfaceError, connection.dialect.loaded_dbapi.Error)):
        return True
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return True
    return connection.invalidated


def create_tables(engine: Engine) -> None:
    """Create the tables that do not exist yet (no migrations: the schema is additive so far)."""
    tables = [TaskRecord, TaskEvent, TaskOwner, PushConfig, PushLease, PushDeadLetter]
    SQLModel.metadata.create_all(engine, tables=[table.__table__ for table in tables])  # type: ignore[attr-defined]


def ping(engine: Engine) -> None:
    """Raise unless the database answers a trivial query."""
    with engine.connect() as connection:
        connection.execute(sa.text("SELECT 1"))
