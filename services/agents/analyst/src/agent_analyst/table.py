"""Tables and their statistics, without a broker: reading a table from JSON or CSV, typing its columns and
describing them. Deterministic: the same table gives the same statistics, in column order."""

from __future__ import annotations

import csv
import io
import math
import re
import statistics
from collections import Counter
from dataclasses import dataclass
from typing import Any

MAX_ROWS = 10_000
MAX_COLUMNS = 100
MAX_CSV_CHARS = 2_000_000
MAX_NAME_CHARS = 200
TOP_VALUES = 5
MAX_VALUE_CHARS = 100
DIGITS = 6
DELIMITERS = ",;\t|"
MISSING = frozenset({"", "na", "n/a", "null", "none", "nan", "-"})
"""Cell texts read as a missing value (case-insensitive, after trimming)."""
SHAPES = (
    'a list of row objects ([{"city": "Oslo", "temp": 4}, ...]), {"columns": [...], "rows": [[...], ...]}, '
    "or CSV text with a header line"
)
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")

Cell = None | str | int | float | bool


class TableError(ValueError):
    """The input is not a table this agent can describe; the message says why."""


@dataclass(frozen=True)
class Table:
    columns: list[str]
    rows: list[list[Cell]]
    """Each row has one cell per column; None is a missing value."""


# -- reading -------------------------------------------------------------------------------------------------
def check_size(rows: int, columns: int) -> None:
    if columns > MAX_COLUMNS:
        raise TableError(f"too large: at most {MAX_COLUMNS} columns (got {columns})")
    if rows > MAX_ROWS:
        raise TableError(f"too large: at most {MAX_ROWS} rows (got {rows})")


def column_names(names: list[Any], where: str) -> list[str]:
    """Column names: strings, trimmed, non-blank, unique."""
    cleaned: list[str] = []
    for index, name in enumerate(names, start=1):
        if not isinstance(name, str) or not name.strip():
            raise TableError(f"{where}: column {index} has no name (got {name!r})")
        name = name.strip()
        if len(name) > MAX_NAME_CHARS:
            raise TableError(f"{where}: column {index}'s name is over {MAX_NAME_CHARS} characters")
        if name in cleaned:
            raise TableError(f"{where}: duplicate column name {name!r}")
        cleaned.append(name)
    return cleaned


def json_cell(value: Any, row: int, column: str) -> Cell:
    """A JSON value as a cell: scalars only."""
    if isinstance(value, dict | list):
        raise TableError(f"row {row}, column {column!r}: nested {type(value).__name__} values are not supported")
    if isinstance(value, float) and not math.isfinite(value):
        raise TableError(f"row {row}, column {column!r}: {value!r} is not a finite number")
    return value


def from_records(records: list[Any]) -> Table:
    """A list of row objects; columns in order of first appearance, a key a row lacks is a missing value."""
    check_size(len(records), 0)
    columns: list[str] = []
    for index, record in enumerate(records, start=1):
        if not isinstance(record, dict):
            raise TableError(f"row {index} is a {type(record).__name__}, not an object: every row must be an object")
        for key in record:
            if key not in columns:
                columns.append(key)
    columns = column_names(columns, "row objects")
    check_size(len(records), len(columns))
    rows = [[json_cell(record.get(name), index, name) for name in columns] for index, record in enumerate(records, 1)]
    return Table(columns, rows)


def from_columns(value: dict[str, Any]) -> Table:
    """{"columns": [names], "rows": [[cells], ...]}; every row as long as the columns."""
    names, rows = value.get("columns"), value.get("rows")
    if not isinstance(names, list) or not isinstance(rows, list):
        raise TableError(f'"columns" and "rows" must both be lists; send {SHAPES}')
    columns = column_names(names, "columns")
    check_size(len(rows), len(columns))
    table: list[list[Cell]] = []
    for index, row in enumerate(rows, start=1):
        if not isinstance(row, list):
            raise TableError(f"row {index} is a {type(row).__name__}, not a list of {len(columns)} values")
        if len(row) != len(columns):
            raise TableError(f"ragged rows: row {index} has {len(row)} values, the columns are {len(columns)}")
        table.append([json_cell(cell, index, name) for cell, name in zip(row, columns, strict=True)])
    return Table(columns, table)


def from_data(value: Any) -> Table:
    """A table from a data part's JSON value."""
    if isinstance(value, list):
        return from_records(value)
    if isinstance(value, dict):
        if "columns" in value:
            return from_columns(value)
        if isinstance(value.get("rows"), list):
            return from_records(value["rows"])
    raise TableError(f"unsupported table: a data part must hold {SHAPES}")


def strip_fence(text: str) -> str:
    """CSV pasted inside a Markdown code fence (```csv ... ```) without the fence."""
    lines = text.strip().splitlines()
    if len(lines) >= 2 and lines[0].startswith("```") and lines[-1].strip() == "```":
        return "\n".join(lines[1:-1])
    return text


def sniff_delimiter(header: str) -> str:
    """The delimiter the header line uses most (comma when it uses none: a one-column table)."""
    counts = {delimiter: header.count(delimiter) for delimiter in DELIMITERS}
    best = max(DELIMITERS, key=lambda delimiter: counts[delimiter])  # first of equals: comma wins ties
    return best if counts[best] else ","


def from_csv(text: str) -> Table:
    """A table from CSV text: a header line, then one line per row (`,` `;` tab or `|` separated, quotes as in
    RFC 4180). Blank lines are skipped; every row must have as many fields as the header."""
    if len(text) > MAX_CSV_CHARS:
        raise TableError(f"too large: at most {MAX_CSV_CHARS} characters of CSV (got {len(text)})")
    text = strip_fence(text)
    header_line = next((line for line in text.splitlines() if line.strip()), "")
    if not header_line:
        raise TableError(f"no rows: the CSV is empty; send {SHAPES}")
    reader = csv.reader(io.StringIO(text), delimiter=sniff_delimiter(header_line), strict=True)
    columns: list[str] | None = None
    rows: list[list[Cell]] = []
    try:
        for record in reader:
            if not record or all(not field.strip() for field in record):
                continue
            if columns is None:
                columns = column_names(record, "CSV header")
                check_size(0, len(columns))
                continue
            if len(record) != len(columns):
                raise TableError(
                    f"ragged rows: CSV line {reader.line_num} has {len(record)} fields, the header has {len(columns)}"
                )
            rows.append([field.strip() for field in record])
            check_size(len(rows), len(columns))
    except csv.Error as error:
        raise TableError(f"unparseable CSV: line {reader.line_num}: {error}") from None
    return Table(columns or [], rows)


# -- typing and describing -----------------------------------------------------------------------------------
def number(cell: Cell) -> int | float | None:
    """The cell as a finite number, or None (bools are not numbers; numeric strings are)."""
    if isinstance(cell, bool) or cell is None:
        return None
    if isinstance(cell, int | float):
        return cell
    text = cell.strip()
    if not _NUMBER.fullmatch(text):
        return None
    if re.fullmatch(r"[+-]?\d+", text):
        return int(text)
    value = float(text)
    return value if math.isfinite(value) else None


def is_missing(cell: Cell) -> bool:
    return cell is None or (isinstance(cell, str) and cell.strip().lower() in MISSING)


def display(cell: Cell) -> str:
    """A cell as text, for a text column's values."""
    if isinstance(cell, bool):
        return "true" if cell else "false"
    text = cell if isinstance(cell, str) else str(cell)
    text = text.strip()
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 1] + "…"


def tidy(value: float) -> int | float:
    """A statistic rounded for JSON: integral values as ints, others to DIGITS decimals."""
    if float(value).is_integer() and abs(value) < 2**53:
        return int(value)
    return round(value, DIGITS)


def describe_column(name: str, cells: list[Cell]) -> dict[str, Any]:
    """A column's statistics: numeric when every present value is a number, text otherwise, empty when none is
    present."""
    present = [cell for cell in cells if not is_missing(cell)]
    missing = len(cells) - len(present)
    if not present:
        return {"name": name, "type": "empty", "count": 0, "missing": missing}
    numbers = [number(cell) for cell in present]
    if all(value is not None for value in numbers):
        values = [value for value in numbers if value is not None]
        return {
            "name": name,
            "type": "numeric",
            "count": len(values),
            "missing": missing,
            "mean": tidy(statistics.fmean(values)),
            "median": tidy(statistics.median(values)),
            "min": tidy(min(values)),
            "max": tidy(max(values)),
            "stdev": tidy(statistics.stdev(values)) if len(values) > 1 else None,
            "sum": tidy(math.fsum(values)),
        }
    counts = Counter(display(cell) for cell in present)
    top = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:TOP_VALUES]
    return {
        "name": name,
        "type": "text",
        "count": len(present),
        "missing": missing,
        "distinct": len(counts),
        "top": [{"value": value, "count": count} for value, count in top],
    }


def describe(table: Table) -> dict[str, Any]:
    """The table's statistics (the artifact's data part); TableError when it has no rows."""
    if not table.rows:
        header = f" (columns: {', '.join(table.columns)})" if table.columns else ""
        raise TableError(f"no rows: the table has no data rows{header}; send {SHAPES}")
    columns = [describe_column(name, [row[index] for row in table.rows]) for index, name in enumerate(table.columns)]
    return {
        "rowCount": len(table.rows),
        "columnCount": len(table.columns),
        "numericColumns": [column["name"] for column in columns if column["type"] == "numeric"],
        "textColumns": [column["name"] for column in columns if column["type"] == "text"],
        "columns": columns,
    }


def fmt(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def summarize(stats: dict[str, Any]) -> str:
    """A few lines for a human."""
    rows, count = stats["rowCount"], stats["columnCount"]
    numeric, text = stats["numericColumns"], stats["textColumns"]
    head = f"{rows} row{'s' if rows != 1 else ''}, {count} column{'s' if count != 1 else ''}"
    kinds = []
    if numeric:
        kinds.append(f"{len(numeric)} numeric ({', '.join(numeric)})")
    if text:
        kinds.append(f"{len(text)} text ({', '.join(text)})")
    lines = [head + (": " + ", ".join(kinds) if kinds else "")]
    for column in stats["columns"]:
        if column["type"] == "numeric":
            lines.append(
                f"{column['name']}: mean {fmt(column['mean'])}, median {fmt(column['median'])}, "
                f"min {fmt(column['min'])}, max {fmt(column['max'])}"
            )
        elif column["type"] == "text":
            best = column["top"][0]
            lines.append(
                f"{column['name']}: {column['distinct']} distinct, most often {best['value']!r} ({best['count']})"
            )
    return "\n".join(lines)
