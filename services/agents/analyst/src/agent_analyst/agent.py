"""Data analyst: descriptive statistics of a table sent as a data part or as CSV text.

Request
    One table, as either
      - a data part holding a list of row objects: [{"city": "Oslo", "temp": 4}, ...] (columns in order of first
        appearance; a key a row lacks is a missing value), or {"rows": [...]} of the same;
      - a data part holding {"columns": ["city", "temp"], "rows": [["Oslo", 4], ...]};
      - CSV text in the message (or a raw part with mediaType text/csv or a .csv filename, UTF-8): a header line,
        then one line per row, separated by `,` `;` tab or `|` (the header's most used one), RFC 4180 quoting;
        a surrounding ```csv fence is ignored. Text starting with `[` or `{` is read as JSON in the shapes above.
        With a data part, the text is not read.
    Cells that are empty or "NA", "N/A", "null", "none", "nan", "-" are missing values. A column is numeric when
    every present value is a finite number (numeric strings count), text otherwise.
    Optional metadata `skill`: "analyze-table" (the only skill).

Outcome
    - no data part and blank text                              -> REJECTED "empty input: ..."
    - more than one data part, a url part, a raw part that is not UTF-8 CSV -> REJECTED "unsupported input: ..."
    - a data part of another shape, nested values in cells     -> REJECTED "unsupported table: ..." / "row n, ..."
    - CSV the csv module cannot read (e.g. an unclosed quote)  -> REJECTED "unparseable CSV: line n: ..."
    - text starting with `[` or `{` that is not JSON           -> REJECTED "unparseable JSON: line n, column m: ..."
    - rows with a different number of values than the header/columns -> REJECTED "ragged rows: ..."
    - blank or duplicate column names                          -> REJECTED, naming the column
    - a header and no data rows, or no rows at all             -> REJECTED "no rows: ..."
    - over 10,000 rows, 100 columns or 2,000,000 characters of CSV -> REJECTED "too large: ..."
    - unknown `skill`                                          -> REJECTED
    - otherwise COMPLETED with the "statistics" artifact below.

Artifact "statistics" (one chunk, lastChunk=true)
    part 1  text: "3 rows, 2 columns: 1 numeric (temp), 1 text (city)" and one line per column
    part 2  data (metadata kind=statistics): {"rowCount", "columnCount", "numericColumns", "textColumns",
            "columns": [per column, in table order]}
              numeric: {"name", "type": "numeric", "count", "missing", "mean", "median", "min", "max",
                        "stdev" (sample; null below 2 values), "sum"}
              text:    {"name", "type": "text", "count", "missing", "distinct", "top": [{"value", "count"}] (at
                        most 5, most frequent first, ties by value)}
              empty:   {"name", "type": "empty", "count": 0, "missing"}
"""

from __future__ import annotations

import json
from typing import Any

from a2amesh.agent import MeshAgent, TaskContext, TaskRejectedError, skill
from a2amesh.models import Message, Part
from agent_analyst.table import SHAPES, Table, TableError, describe, from_csv, from_data, summarize

ANALYZE_SKILL = "analyze-table"
STATISTICS_ARTIFACT = "statistics"
CSV_MEDIA_TYPES = frozenset({"text/csv", "text/plain", "application/csv"})


def csv_from_raw(part: Part) -> str:
    """A raw part's bytes as CSV text, when the part says it is CSV."""
    is_csv = (part.media_type or "").split(";")[0].strip().lower() in CSV_MEDIA_TYPES or (
        part.filename or ""
    ).lower().endswith(".csv")
    if not is_csv:
        raise TaskRejectedError(
            f"unsupported input: a raw part of type {part.media_type or 'unknown'!r}; send CSV (mediaType text/csv) "
            "or a data part"
        )
    try:
        return (part.raw or b"").decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise TaskRejectedError(f"unsupported input: the raw CSV is not UTF-8 ({error.reason})") from None


def json_text(text: str) -> Any:
    """Text that starts like JSON, parsed as JSON (a table pasted as text rather than sent as a data part)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise TaskRejectedError(f"unparseable JSON: line {error.lineno}, column {error.colno}: {error.msg}") from None


def read_table(message: Message) -> Table:
    """The request's one table, or TaskRejectedError saying why there is none."""
    parts = message.parts
    if any(part.kind == "url" for part in parts):
        raise TaskRejectedError("unsupported input: url parts are not fetched; send the table itself")
    data = [part.data for part in parts if part.kind == "data"]
    raw = [part for part in parts if part.kind == "raw"]
    if len(data) + len(raw) > 1:
        raise TaskRejectedError(
            f"unsupported input: one table per task, got {len(data)} data and {len(raw)} raw part(s)"
        )
    try:
        if data:
            return from_data(data[0])
        text = csv_from_raw(raw[0]) if raw else message.text()
        if not text.strip():
            raise TaskRejectedError(f"empty input: send {SHAPES}")
        if text.lstrip().startswith(("[", "{")):
            return from_data(json_text(text))
        return from_csv(text)
    except TableError as error:
        raise TaskRejectedError(str(error)) from None


class AnalystAgent(MeshAgent):
    """Describes a table: per-column statistics for numbers and text."""

    name = "Data Analyst Agent"
    description = (
        "Takes a table as a data part (row objects, or columns and rows) or as CSV text and returns descriptive "
        "statistics as a data part: row count, and per column count, missing, mean, median, min, max and standard "
        "deviation for numbers, or distinct values and the most frequent ones for text."
    )
    rerunnable = True  # its work has no effect outside the task: a pool peer may redo it
    input_modes = ["application/json", "text/csv", "text/plain"]
    output_modes = ["application/json", "text/plain"]

    @skill(
        id=ANALYZE_SKILL,
        name="Analyze table",
        description=(
            "Descriptive statistics of one table: send a data part holding a list of row objects or "
            '{"columns": [...], "rows": [[...]]}, or CSV text with a header line (at most 10,000 rows and '
            "100 columns). Returns {rowCount, columns: [{name, type, count, mean, median, min, max, stdev | "
            "distinct, top}]}."
        ),
        tags=["analyst", "data", "statistics", "table", "csv", "json"],
        examples=[
            "city,temp_c,rain_mm\nOslo,4,12.5\nLima,19,0\nCairo,24,0.2",
            '[{"product": "A", "units": 12, "price": 9.5}, {"product": "B", "units": 3, "price": 20}]',
            '{"columns": ["region", "sales"], "rows": [["north", 120], ["south", 95]]}',
        ],
        input_modes=["application/json", "text/csv", "text/plain"],
        output_modes=["application/json", "text/plain"],
    )
    async def analyze(self, task: TaskContext) -> None:
        table = read_table(task.message)
        try:
            stats = describe(table)
        except TableError as error:
            raise TaskRejectedError(str(error)) from None
        await task.working(f"analyzing {stats['rowCount']} rows x {stats['columnCount']} columns")
        text = summarize(stats)
        await task.artifact(
            Part(text=text),
            Part(data=stats, metadata={"kind": "statistics"}),
            name=STATISTICS_ARTIFACT,
            last_chunk=True,
        )
        await task.complete(text.splitlines()[0])
