"""The writer's handler against the real TaskContext, with events collected in memory instead of sent over MQTT."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest

from a2amesh.agent import TaskRejectedError
from a2amesh.binding.tasks import TaskContext, TaskRecord
from a2amesh.models import JsonRpcRequest, Message, Part, Role, StreamResponse, Task, TaskState, TaskStatus
from a2amesh.settings import AgentSettings
from agent_writer.agent import WRITE_SKILL, WriterAgent

HITS = [
    {"rank": 1, "score": 7.1, "source": "mqtt-retained", "title": "Retained Messages", "passage": "A retained "
     "message is kept by the broker. New subscribers receive it at once."},
    {"rank": 2, "score": 5.0, "source": "mqtt-last-will", "title": "Last Will", "passage": "The broker publishes "
     "the will message when a client disconnects without saying goodbye."},
    {"rank": 3, "score": 4.2, "source": "mqtt-retained", "title": "Retained Messages", "passage": "Publish an "
     "empty retained payload to delete the retained message."},
]  # fmt: skip


@pytest.fixture(scope="module")
def agent() -> WriterAgent:
    return WriterAgent(AgentSettings(agent_id="writer-unit"))


async def run(agent: WriterAgent, *parts: Part, **metadata: Any) -> tuple[TaskRecord, list[dict[str, Any]]]:
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


def report_of(events: list[dict[str, Any]]) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """The report's Markdown, its outline, and the artifact update that carried them."""
    (update,) = [event["artifactUpdate"] for event in events if "artifactUpdate" in event]
    markdown_part, outline_part = update["artifact"]["parts"]
    return markdown_part["text"], outline_part["data"], update


async def test_passages_one_per_part_become_a_cited_report(agent: WriterAgent) -> None:
    record, events = await run(agent, Part(text="Retained messages and wills"), *(Part(data=hit) for hit in HITS))
    assert events[0]["statusUpdate"]["status"]["message"]["parts"][0]["text"] == "writing from 3 passages"
    markdown, outline, update = report_of(events)
    assert update["artifact"]["name"] == "report" and update["lastChunk"] is True
    assert update["artifact"]["parts"][0]["mediaType"] == "text/markdown"
    assert update["artifact"]["parts"][1]["metadata"] == {"kind": "outline"}
    assert markdown.startswith("# Retained messages and wills\n\n## Summary\n")
    assert "## Retained Messages" in markdown and "## Last Will" in markdown
    assert "1. Retained Messages (`mqtt-retained`)\n2. Last Will (`mqtt-last-will`)" in markdown
    assert set(re.findall(r"\[(\d+)\]", markdown)) == {"1", "2"}
    assert outline["passages"] == 3 and [s["source"] for s in outline["sources"]] == ["mqtt-retained", "mqtt-last-will"]
    final = events[-1]["statusUpdate"]["status"]
    assert final["state"] == "TASK_STATE_COMPLETED"
    assert final["message"]["parts"][0]["text"].startswith("report 'Retained messages and wills': ")
    assert record.current_state is TaskState.COMPLETED


async def test_same_input_same_report(agent: WriterAgent) -> None:
    first = report_of((await run(agent, Part(text="T"), Part(data=HITS)))[1])[0]
    again = report_of((await run(agent, Part(text="T"), Part(data=list(reversed(HITS)))))[1])[0]
    assert first == again


async def test_the_research_artifact_supplies_the_topic_when_the_text_is_blank(agent: WriterAgent) -> None:
    summary = {"query": "retained messages", "topK": 3, "searched": 80, "returned": 3, "sources": []}
    artifact = {"name": "passages", "parts": [*({"data": hit} for hit in HITS), {"data": summary}]}
    markdown, _, _ = report_of((await run(agent, Part(data=artifact)))[1])
    assert markdown.startswith("# retained messages\n")


async def test_without_text_or_query_the_best_source_names_the_report(agent: WriterAgent) -> None:
    markdown, _, _ = report_of((await run(agent, Part(data=HITS)))[1])
    assert markdown.startswith("# Notes on Retained Messages\n")


async def test_plain_text_passages(agent: WriterAgent) -> None:
    text = "# Reliable delivery\n\n[mqtt-qos] QoS 1 retries until acknowledged.\n\n[idempotency] Handle duplicates."
    markdown, outline, _ = report_of((await run(agent, Part(text=text)))[1])
    assert markdown.startswith("# Reliable delivery\n")
    assert [source["source"] for source in outline["sources"]] == ["mqtt-qos", "idempotency"]


@pytest.mark.parametrize(
    ("parts", "reason"),
    [
        ([Part(text="   ")], r"^nothing to write from: send research passages"),
        ([Part(text="Write about MQTT")], r"^no passages: the text is only a topic"),
        ([Part(text="topic"), Part(data={"rows": [1, 2]})], r"^nothing to write from: 1 data part but no passages"),
        ([Part(data=[{"passage": "  "}])], r"^nothing to write from"),
        ([Part(data={"passage": 42})], r"must be a string"),
        ([Part(data=[{"passage": "p"}] * 101)], r"^too many passages"),
        ([Part(data={"passage": "x" * 250_000})], r"^input too large"),
        ([Part(data=None)], r"^nothing to write from"),
    ],
)
async def test_unusable_input_is_rejected_with_the_reason(agent: WriterAgent, parts: list[Part], reason: str) -> None:
    with pytest.raises(TaskRejectedError, match=reason):
        await run(agent, *parts)


async def test_another_skill_is_rejected(agent: WriterAgent) -> None:
    with pytest.raises(TaskRejectedError, match="unknown skill 'review-report'"):
        await run(agent, Part(data=HITS), skill="review-report")
    record, _ = await run(agent, Part(data=HITS), skill=WRITE_SKILL)
    assert record.current_state is TaskState.COMPLETED


def test_card_skill_has_examples(agent: WriterAgent) -> None:
    card = agent.card()
    assert card.skill_ids() == [WRITE_SKILL]
    (skill,) = card.skills
    assert skill.examples and len(skill.examples) >= 2
    assert {"writer", "report", "markdown", "citations"} <= set(card.tags())
    assert "text/markdown" in card.default_output_modes
