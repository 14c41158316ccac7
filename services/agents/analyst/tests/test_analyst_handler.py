"""The analyst's handler against the real TaskContext, with events collected in memory instead of sent over MQTT."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from a2amesh.agent import TaskRejectedError
from a2amesh.binding.tasks import TaskContext, TaskRecord
from a2amesh.models import JsonRpcRequest, Message, Part, Role, StreamResponse, Task, TaskState, TaskStatus
from a2amesh.settings import AgentSettings
from agent_analyst.agent import ANALYZE_SKILL, AnalystAgent

CSV = "product,units,price\nA,12,9.5\nB,3,20\nC,7,9.5\n"
RECORDS = [
    {"product": "A", "units": 12, "price": 9.5},
    {"product": "B", "units": 3, "price": 20},
    {"product": "C", "units": 7, "price": 9.5},
]


@pytest.fixture(scope="module")
def agent() -> AnalystAgent:
    return AnalystAgent(AgentSettings(agent_id="analyst-unit"))


async def run(agent: AnalystAgent, *parts: Part, **metadata: Any) -> tuple[TaskRecord, list[dict[str, Any]]]:
    """Run one task through the handler as the responder would; the wire form of every event it emitted."""
    task_id = str(uuid.uuid4())
    message = Message(message_id="m1", role=Role.USER, parts=list(parts), task_id=task_id, context_id="c1")
    task = Task(id=task_id, context_id="c1", status=TaskStatus(state=TaskState.WORKING), history=[message])
    request = JsonRpcRequest(jsonrpc="2.0", id=1, method="SendStreamingMessage", params={})
    record = TaskRecord(task=task, request=request, request_metadata=metadata)
    events: list[dict[str, Any]] = []

    async def emit(record: TaskRecord, item: StreamResponse) -> None:
        record.apply(item)
        events.append(item.to_wire())

    await agent.handle(TaskContext(record, emit))
    return record, events


def statistics_of(events: list[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    (update,) = [event["artifactUpdate"] for event in events if "artifactUpdate" in event]
    assert update["artifact"]["name"] == "statistics" and update["lastChunk"] is True
    text_part, data_part = update["artifact"]["parts"]
    assert data_part["metadata"] == {"kind": "statistics"}
    return text_part["text"], data_part["data"]


async def test_csv_text_gives_statistics_as_a_data_part(agent: AnalystAgent) -> None:
    record, events = await run(agent, Part(text=CSV))
    assert events[0]["statusUpdate"]["status"]["message"]["parts"][0]["text"] == "analyzing 3 rows x 3 columns"
    text, stats = statistics_of(events)
    assert stats["rowCount"] == 3 and stats["numericColumns"] == ["units", "price"]
    units = stats["columns"][1]
    assert (units["mean"], units["median"], units["min"], units["max"]) == (7.333333, 7, 3, 12)
    assert text.startswith("3 rows, 3 columns: 2 numeric (units, price), 1 text (product)")
    final = events[-1]["statusUpdate"]["status"]
    assert final["state"] == "TASK_STATE_COMPLETED"
    assert final["message"]["parts"][0]["text"] == "3 rows, 3 columns: 2 numeric (units, price), 1 text (product)"
    assert record.current_state is TaskState.COMPLETED


async def test_every_table_shape_gives_the_same_statistics(agent: AnalystAgent) -> None:
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
    results = [statistics_of((await run(agent, *parts))[1])[1] for parts in shapes]
    assert all(result == results[0] for result in results)


async def test_json_pasted_as_text_is_read_as_json(agent: AnalystAgent) -> None:
    _, stats = statistics_of((await run(agent, Part(text=json.dumps(RECORDS))))[1])
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
async def test_bad_input_is_rejected_with_the_reason(agent: AnalystAgent, parts: list[Part], reason: str) -> None:
    with pytest.raises(TaskRejectedError, match=reason):
        await run(agent, *parts)


async def test_another_skill_is_rejected(agent: AnalystAgent) -> None:
    with pytest.raises(TaskRejectedError, match="unknown skill 'research'"):
        await run(agent, Part(text=CSV), skill="research")
    record, _ = await run(agent, Part(text=CSV), skill=ANALYZE_SKILL)
    assert record.current_state is TaskState.COMPLETED


def test_card_skill_has_examples_that_work(agent: AnalystAgent) -> None:
    card = agent.card()
    assert card.skill_ids() == [ANALYZE_SKILL]
    (skill,) = card.skills
    assert skill.examples and len(skill.examples) == 3
    assert {"analyst", "statistics", "table", "csv"} <= set(card.tags())


@pytest.mark.parametrize("index", [0, 1, 2])
async def test_each_card_example_is_analyzed(agent: AnalystAgent, index: int) -> None:
    example = (agent.skills[0].examples or [])[index]
    record, _ = await run(agent, Part(text=example))
    assert record.current_state is TaskState.COMPLETED
