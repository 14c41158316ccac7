"""The writer's statements run on the driver's cursor, compiled by SQLAlchemy once per dialect (and per number of
ids for a read by ids): per batch, SQLAlchemy's execution (its cache key, parameter processing, result wrapping) cost
more than the statements' own work in the database (a tenth of the store's write path on SQLite). The conversions
the columns' types apply are applied here as SQLAlchemy would, so the rows written and read are the same; a driver
error is raised as SQLAlchemy's (OperationalError for an unavailable database, IntegrityError...), as the store's
callers expect."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.sqlite import DATETIME as SQLITE_DATETIME
from sqlalchemy.engine import Connection, Dialect

Processor = Callable[[Any], Any] | None


def select_in(connection: Connection, statement: sa.Select[Any], ids: Sequence[str]) -> list[tuple[Any, ...]]:
    """The rows `statement` (a select with one expanding IN parameter, `ids`) reads for these ids."""
    if not ids:
        return []
    count = _padded(len(ids))  # the last id repeated to fill it, which IN ignores
    padded = (*ids, *(ids[-1],) * (count - len(ids)))
    sql, names, processors = _select_in(connection.dialect, statement, count)
    parameters: Sequence[str] | dict[str, str] = padded if names is None else dict(zip(names, padded, strict=True))
    rows = execute(connection, sql, parameters, many=False)
    if not any(processors):
        return rows
    return [
        tuple(v if process is None else process(v) for v, process in zip(row, processors, strict=True)) for row in rows
    ]


def write_rows(connection: Connection, write: RowWrite, rows: Sequence[Mapping[str, object]]) -> None:
    """`write`'s statement run once for every row (one executemany)."""
    sql, names, columns = _compiled(write, connection.dialect)
    values = [
        tuple(row[column] if process is None else process(row[column]) for column, process in columns) for row in rows
    ]
    if names is None:
        execute(connection, sql, values, many=True)
    else:
        execute(connection, sql, [dict(zip(names, row, strict=True)) for row in values], many=True)


@dataclass(frozen=True, eq=False)
class RowWrite:
    """An insert or update the writer runs for many rows, and the table whose columns its parameters fill (a
    parameter named `b_<column>` matches that column: an update's key)."""

    table: sa.Table
    statement: sa.Executable


@functools.lru_cache(maxsize=64)
def _compiled(
    write: RowWrite, dialect: Dialect
) -> tuple[str, tuple[str, ...] | None, tuple[tuple[str, Processor], ...]]:
    """`write` as the driver takes it; its parameters' names (None: positional) and, in the driver's order, the
    column each takes its value from with the conversion the column's type applies first."""
    compiled = write.statement.compile(dialect=dialect)
    order = tuple(compiled.positiontup or ()) if dialect.positional else tuple(compiled.binds)
    columns = tuple(
        (name.removeprefix("b_"), bind_processor(write.table.c[name.removeprefix("b_")].type, dialect))
        for name in order
    )
    return str(compiled), None if dialect.positional else order, columns


def bind_processor(column_type: sa.types.TypeEngine[Any], dialect: Dialect) -> Processor:
    """What SQLAlchemy does to a value of `column_type` before the driver sees it. SQLite's timestamps are text in
    SQLAlchemy's format (`YYYY-MM-DD HH:MM:SS.ffffff`); the same text from `isoformat` costs a third as much."""
    implementation = column_type.dialect_impl(dialect)
    if type(implementation) is SQLITE_DATETIME and implementation._storage_format == SQLITE_DATETIME._storage_format:
        return sqlite_timestamp
    return implementation.bind_processor(dialect)


def sqlite_timestamp(value: Any) -> str | None:
    """A datetime as SQLAlchemy's SQLite DATETIME stores it: its fields as given, microseconds always, no offset."""
    return None if value is None else value.isoformat(" ", "microseconds")[:26]


def _padded(count: int) -> int:
    """How many ids a read by `count` ids is compiled for: the next power of two up to 256, then the next multiple
    of 256 (a handful of statement texts, and never much over the count: the database's parameter limit stays
    where it was)."""
    return 1 << (count - 1).bit_length() if count <= 256 else -(-count // 256) * 256


@functools.lru_cache(maxsize=64)
def _select_in(
    dialect: Dialect, statement: sa.Select[Any], count: int
) -> tuple[str, tuple[str, ...] | None, tuple[Processor, ...]]:
    """`statement` expanded for `count` ids (`_padded`: `select_in` fills them), as the driver takes it, the names of
    its parameters (None: positional) and the result processors of its columns. Keyed by count because the text
    depends on it; padding keeps the counts, and so the texts PostgreSQL prepares, to a handful."""
    expanded = statement.compile(dialect=dialect).construct_expanded_state({"ids": [""] * count})
    processors = tuple(
        column.type.dialect_impl(dialect).result_processor(dialect, None) for column in statement.selected_columns
    )
    return expanded.statement, None if dialect.positional else tuple(expanded.parameters), processors


def execute(connection: Connection, sql: str, parameters: Any, *, many: bool = False) -> list[tuple[Any, ...]]:
    """Run `sql` (in the driver's own dialect and parameter style) on the connection's driver cursor, in the
    connection's transaction: its rows, if it returns any. A driver error is raised as SQLAlchemy raises it, saying
    whether the connection was lost (`connection_invalidated`)."""
    dialect = connection.dialect
    cursor = None
    try:
        cursor = connection.connection.cursor()  # in the try: a closed connection fails here, as SQLAlchemy's error
        if many:
            cursor.executemany(sql, parameters)
            return []
        cursor.execute(sql, parameters)
        return cursor.fetchall() if cursor.description is not None else []
    except dialect.loaded_dbapi.Error as error:
        dropped = dialect.is_disconnect(error, connection.connection.dbapi_connection, cursor)
        raise sa.exc.DBAPIError.instance(
            sql, parameters, error, dialect.loaded_dbapi.Error, connection_invalidated=dropped, dialect=dialect
        ) from error
    finally:
        if cursor is not None:
            with contextlib.suppress(dialect.loaded_dbapi.Error):  # a closed connection's: the error above stands
                cursor.close()
