"""The analyst's logic, without a broker: reading tables from JSON and CSV, typing columns, statistics."""

from __future__ import annotations

import math
import statistics

import pytest

from agent_analyst.table import (
    MAX_COLUMNS,
    MAX_CSV_CHARS,
    MAX_ROWS,
    Table,
    TableError,
    describe,
    describe_column,
    from_columns,
    from_csv,
    from_data,
    from_records,
    number,
    sniff_delimiter,
    summarize,
)

CITIES = "city,temp_c,rain_mm\nOslo,4,12.5\nLima,19,0\nCairo,24,0.2\nOslo,6,NA\n"


# -- reading JSON --------------------------------------------------------------------------------------------
def test_records_take_columns_in_order_of_first_appearance() -> None:
    table = from_records([{"a": 1, "b": "x"}, {"b": "y", "c": True}])
    assert table == Table(["a", "b", "c"], [[1, "x", None], [None, "y", True]])


@pytest.mark.parametrize(
    ("records", "reason"),
    [
        ([{"a": 1}, [1]], r"^row 2 is a list, not an object"),
        ([{"a": {"nested": 1}}], r"^row 1, column 'a': nested dict values are not supported"),
        ([{"a": [1, 2]}], r"nested list"),
        ([{"a": math.nan}], r"is not a finite number"),
        ([{"": 1}], r"column 1 has no name"),
    ],
)
def test_bad_records(records: list[object], reason: str) -> None:
    with pytest.raises(TableError, match=reason):
        from_records(records)


def test_columns_and_rows() -> None:
    table = from_columns({"columns": [" region ", "sales"], "rows": [["north", 120], ["south", None]]})
    assert table == Table(["region", "sales"], [["north", 120], ["south", None]])


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ({"columns": ["a", "b"], "rows": [[1, 2], [3]]}, r"^ragged rows: row 2 has 1 values, the columns are 2"),
        ({"columns": ["a"], "rows": [{"a": 1}]}, r"^row 1 is a dict, not a list of 1 values"),
        ({"columns": ["a", "a"], "rows": []}, r"duplicate column name 'a'"),
        ({"columns": "a,b", "rows": []}, r'"columns" and "rows" must both be lists'),
        ({"columns": ["a", 2], "rows": []}, r"column 2 has no name"),
    ],
)
def test_bad_columns_and_rows(value: dict[str, object], reason: str) -> None:
    with pytest.raises(TableError, match=reason):
        from_columns(value)


def test_from_data_dispatches_on_shape() -> None:
    assert from_data([{"a": 1}]).columns == ["a"]
    assert from_data({"rows": [{"a": 1}]}).columns == ["a"]
    assert from_data({"columns": ["a"], "rows": [[1]]}).rows == [[1]]
    for value in ("a,b", 3, {"table": []}, None):
        with pytest.raises(TableError, match=r"^unsupported table"):
            from_data(value)


def test_size_limits() -> None:
    with pytest.raises(TableError, match=f"^too large: at most {MAX_ROWS} rows"):
        from_records([{"a": 1}] * (MAX_ROWS + 1))
    with pytest.raises(TableError, match=f"^too large: at most {MAX_COLUMNS} columns"):
        from_records([{f"c{i}": i for i in range(MAX_COLUMNS + 1)}])
    with pytest.raises(TableError, match=f"^too large: at most {MAX_ROWS} rows"):
        from_csv("a\n" + "1\n" * (MAX_ROWS + 1))
    with pytest.raises(TableError, match=f"^too large: at most {MAX_CSV_CHARS} characters"):
        from_csv("a\n" + "1" * MAX_CSV_CHARS)


# -- reading CSV ---------------------------------------------------------------------------------------------
def test_csv_with_header_and_rows() -> None:
    table = from_csv(CITIES)
    assert table.columns == ["city", "temp_c", "rain_mm"]
    assert table.rows[0] == ["Oslo", "4", "12.5"] and len(table.rows) == 4


@pytest.mark.parametrize(("header", "delimiter"), [("a,b", ","), ("a;b;c", ";"), ("a\tb", "\t"), ("a|b", "|")])
def test_delimiter_is_sniffed_from_the_header(header: str, delimiter: str) -> None:
    assert sniff_delimiter(header) == delimiter


def test_single_column_csv_uses_comma() -> None:
    assert sniff_delimiter("value") == ","
    assert from_csv("value\n1\n2\n").rows == [["1"], ["2"]]


def test_csv_quotes_fences_and_blank_lines() -> None:
    text = '```csv\nname;note\n\n"Smith; J.";"said ""hi""\nthen left"\n\nDoe;ok\n```'
    table = from_csv(text)
    assert table.columns == ["name", "note"]
    assert table.rows == [["Smith; J.", 'said "hi"\nthen left'], ["Doe", "ok"]]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("a,b\n1,2\n3\n", r"^ragged rows: CSV line 3 has 1 fields, the header has 2"),
        ("a,b\n1,2,3\n", r"^ragged rows: CSV line 2 has 3 fields"),
        ('a,b\n"1,2\n', r"^unparseable CSV: line \d+: "),
        ('a,b\n1,"2"x\n', r"^unparseable CSV: line 2: "),
        ("a,a\n1,2\n", r"duplicate column name 'a'"),
        ("a,,c\n1,2,3\n", r"column 2 has no name"),
        ("   \n\n", r"^no rows: the CSV is empty"),
    ],
)
def test_bad_csv(text: str, reason: str) -> None:
    with pytest.raises(TableError, match=reason):
        from_csv(text)


def test_header_without_rows_has_no_rows() -> None:
    with pytest.raises(TableError, match=r"^no rows: the table has no data rows \(columns: a, b\)"):
        describe(from_csv("a,b\n"))
    with pytest.raises(TableError, match=r"^no rows: the table has no data rows;"):
        describe(from_records([]))


# -- statistics ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("cell", "expected"),
    [("4", 4), ("-3", -3), ("+2.5", 2.5), (".5", 0.5), ("1e3", 1000.0), (7, 7), (2.5, 2.5)],
)
def test_numbers(cell: object, expected: float) -> None:
    assert number(cell) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("cell", ["1,5", "inf", "nan", "1e999", "0x10", "1_000", "", "abc", True, None])
def test_not_numbers(cell: object) -> None:
    assert number(cell) is None  # type: ignore[arg-type]


def test_numeric_column_statistics() -> None:
    values = [4, 19, 24, 6]
    column = describe_column("temp", ["4", "19", "24", "6", "", None, "n/a"])
    assert column == {
        "name": "temp",
        "type": "numeric",
        "count": 4,
        "missing": 3,
        "mean": 13.25,
        "median": 12.5,
        "min": 4,
        "max": 24,
        "stdev": round(statistics.stdev(values), 6),
        "sum": 53,
    }


def test_one_value_has_no_stdev() -> None:
    assert describe_column("x", [2.5])["stdev"] is None


def test_text_column_statistics() -> None:
    column = describe_column("city", ["Oslo", "Lima", "Oslo", "Cairo", None, "Lima", "Bergen", "Accra", "Zurich"])
    assert column == {
        "name": "city",
        "type": "text",
        "count": 8,
        "missing": 1,
        "distinct": 6,
        "top": [
            {"value": "Lima", "count": 2},
            {"value": "Oslo", "count": 2},
            {"value": "Accra", "count": 1},
            {"value": "Bergen", "count": 1},
            {"value": "Cairo", "count": 1},
        ],
    }


def test_mixed_and_boolean_columns_are_text_and_empty_columns_are_empty() -> None:
    assert describe_column("m", [1, "two", 3])["type"] == "text"
    flags = describe_column("f", [True, False, True])
    assert flags["type"] == "text" and flags["top"][0] == {"value": "true", "count": 2}
    assert describe_column("e", [None, "", "NA"]) == {"name": "e", "type": "empty", "count": 0, "missing": 3}


def test_describe_a_whole_table() -> None:
    stats = describe(from_csv(CITIES))
    assert stats["rowCount"] == 4 and stats["columnCount"] == 3
    assert stats["numericColumns"] == ["temp_c", "rain_mm"] and stats["textColumns"] == ["city"]
    rain = stats["columns"][2]
    assert rain["count"] == 3 and rain["missing"] == 1 and rain["mean"] == pytest.approx(4.233333)
    assert summarize(stats).splitlines() == [
        "4 rows, 3 columns: 2 numeric (temp_c, rain_mm), 1 text (city)",
        "city: 3 distinct, most often 'Oslo' (2)",
        "temp_c: mean 13.25, median 12.5, min 4, max 24",
        "rain_mm: mean 4.23333, median 0.2, min 0, max 12.5",
    ]


def test_json_and_csv_of_the_same_table_agree() -> None:
    records = [
        {"city": "Oslo", "temp_c": 4, "rain_mm": 12.5},
        {"city": "Lima", "temp_c": 19, "rain_mm": 0},
        {"city": "Cairo", "temp_c": 24, "rain_mm": 0.2},
        {"city": "Oslo", "temp_c": 6, "rain_mm": None},
    ]
    assert describe(from_records(records)) == describe(from_csv(CITIES))
