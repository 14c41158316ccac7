"""The analyst's handler through the real runtime (a2amesh.testing): no broker, events kept in memory."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from a2amesh.models import Part, TaskState
from a2amesh.settings import AgentSettings
from a2amesh.testing import AgentHarness, Reply
from agent_analyst.agent import ANALYZE_SKILL, AnalystAgent

CSV = "product,units,price\nA,12,9.5\nB,3,20\nC,7,9.5\n"
RECORDS = [
    {"product": "A", "units": 12, "price": 9.5},
    {"product": "B", "units": 3, "price": 20},
    {"product": "C", "units": 7, "price": 9.5},
]


Harness = AgentHarness[AnalystAgent]


@pytest.fixture(scope="module")
def harness() -> Harness:
    return AgentHarness(AnalystAgent(AgentSettings(agent_id="analyst-unit")))


def statistics_of(reply: Reply) -> tuple[str, dict[str, Any]]:
    text_part, data_part = reply.sole_artifact("statistics")["parts"]
    assert data_part["metadata"] == {"kind": "statistics"}
    return text_part["text"], data_part["data"]


async def test_csv_text_gives_statistics_as_a_data_part(harness: Harness) -> None:
    reply = await harness.send(CSV)
    assert reply.notes[0] == "analyzing 3 rows x 3 columns"
    text, stats = statistics_of(reply)
    assert stats["rowCount"] == 3 and stats["numericColumns"] == ["units", "price"]
    units = stats["columns"][1]
    assert (units["mean"], units["median"], units["min"], units["max"]) == (7.333333, 7, 3, 12)
    assert text.startswith("3 rows, 3 columns: 2 numeric (units, price), 1 text (product)")
    assert reply.text == "3 rows, 3 columns: 2 numeric (units, price), 1 text (product)"


async def test_every_table_shape_gives_the_same_statistics(harness: Harness) -> None:
    names = ["product", "units", "price"]
    columns = {"columns": names, "rows": [[record[name] for name in names] for record in RECORDS]}
    shapes = [
        [Part(text=CSV)],
        [Part(data=RECORDS)],
        [Part(data={"rows": RECORDS})],
        [Part(data=columns)],
        [Part(text="describe this please"), Part(data=RECORDS)],  # with a data part, the text is not read
        [Part(raw=CSV.encode(), media_type="text/csv")],
        [Part(raw=CSV.encode(), filename="sales.CSV")],
        [Part(text=f"```csv\n{CSV}```")],
    ]
    results = [statistics_of(await harness.send(*parts))[1] for parts in shapes]
    assert all(result == results[0] for result in results)


async def test_json_pasted_as_text_is_read_as_json(harness: Harness) -> None:
    _, stats = statistics_of(await harness.send(json.dumps(RECORDS)))
    assert stats["rowCount"] == 3


@pytest.mark.parametrize(
    ("parts", "reason"),
    [
        ([Part(text="  ")], r"^empty input: send a list of row objects"),
        ([Part(data=RECORDS), Part(data=RECORDS)], r"^unsupported input: one table per task, got 2 data"),
        ([Part(url="https://example.com/t.csv")], r"^unsupported input: url parts are not fetched"),
        ([Part(raw=b"\x89PNG", media_type="image/png")], r"^unsupported input: a raw part of type 'image/png'"),
        ([Part(raw=b"a,b\n\xff,1\n", media_type="text/csv")], r"^unsupported input: the raw CSV is not UTF-8"),
        ([Part(data={"table": 1})], r"^unsupported table: a data part must hold"),
        ([Part(data=[{"a": {"b": 1}}])], r"^row 1, column 'a': nested dict"),
        ([Part(text='a,b\n1,"2\n')], r"^unparseable CSV: line "),
        ([Part(text='[{"a": 1},')], r"^unparseable JSON: line 1, column 11"),
        ([Part(text="a,b\n1,2\n3,4,5\n")], r"^ragged rows: CSV line 3 has 3 fields, the header has 2"),
        ([Part(data={"columns": ["a", "b"], "rows": [[1]]})], r"^ragged rows: row 1 has 1 values"),
        ([Part(text="a,b\n")], r"^no rows: the table has no data rows \(columns: a, b\)"),
        ([Part(text="What is the average price?")], r"^no rows: "),
        ([Part(data=[])], r"^no rows: "),
        ([Part(data=[{"a": 1}] * 10_001)], r"^too large: at most 10000 rows"),
    ],
)
async def test_bad_input_is_rejected_with_the_reason(harness: Harness, parts: list[Part], reason: str) -> None:
    reply = await harness.send(*parts)
    assert reply.state is TaskState.REJECTED and re.match(reason, reply.text), reply.text
    assert not reply.artifact_updates


async def test_another_skill_is_rejected(harness: Harness) -> None:
    reply = await harness.send(CSV, skill="research")
    assert reply.state is TaskState.REJECTED and reply.text.startswith("unknown skill 'research'")
    assert (await harness.send(CSV, skill=ANALYZE_SKILL)).state is TaskState.COMPLETED


def test_card_skill_has_examples_that_work(harness: Harness) -> None:
    card = harness.agent.card()
    assert card.skill_ids() == [ANALYZE_SKILL]
    (skill,) = card.skills
    assert skill.examples and len(skill.examples) == 3
    assert {"analyst", "statistics", "table", "csv"} <= set(card.tags())


@pytest.mark.parametrize("index", [0, 1, 2])
async def test_each_card_example_is_analyzed(harness: Harness, index: int) -> None:
    example = (harness.agent.skills[0].examples or [])[index]
    assert (await harness.send(example)).state is TaskState.COMPLETED
