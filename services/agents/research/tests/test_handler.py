"""The agent's handler against the real TaskContext, with events collected in memory instead of sent over MQTT."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from a2amesh.agent import TaskRejectedError
from a2amesh.binding.tasks import TaskContext, TaskRecord
from a2amesh.models import JsonRpcRequest, Message, Part, Role, StreamResponse, Task, TaskState, TaskStatus
from a2amesh.settings import AgentSettings
from agent_research.agent import LIST_SOURCES_SKILL, ResearchAgent


@pytest.fixture(scope="module")
def agent() -> ResearchAgent:
    return ResearchAgent(AgentSettings(agent_id="research-unit"))


async def run(agent: ResearchAgent, text: str, **metadata: Any) -> tuple[TaskRecord, list[dict[str, Any]]]:
    """Run one task through the handler as the responder would; the wire form of every event it emitted."""
    task_id = str(uuid.uuid4())
    message = Message(message_id="m1", role=Role.USER, parts=[Part(text=text)], task_id=task_id, context_id="c1")
    task = Task(id=task_id, context_id="c1", status=TaskStatus(state=TaskState.WORKING), history=[message])
    request = JsonRpcRequest(jsonrpc="2.0", id=1, method="SendStreamingMessage", params={})
    record = TaskRecord(task=task, request=request, request_metadata=metadata)
    events: list[dict[str, Any]] = []

    async def emit(record: TaskRecord, item: StreamResponse) -> None:
        record.apply(item)
        events.append(item.to_wire())

    await agent.handle(TaskContext(record, emit))
    return record, events


def chunks(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [event["artifactUpdate"] for event in events if "artifactUpdate" in event]


async def test_results_stream_as_chunks_of_one_artifact(agent: ResearchAgent) -> None:
    record, events = await run(agent, "How are retained messages deleted?", topK=3)
    assert events[0]["statusUpdate"]["status"]["message"]["parts"][0]["text"].startswith("searching ")
    updates = chunks(events)
    assert len(updates) == 4  # three hits, then the summary
    assert len({update["artifact"]["artifactId"] for update in updates}) == 1
    assert "append" not in updates[0] and all(update["append"] for update in updates[1:])
    assert [update["lastChunk"] for update in updates] == [False, False, False, True]
    hits = [update["artifact"]["parts"][0]["data"] for update in updates[:3]]
    assert [hit["rank"] for hit in hits] == [1, 2, 3]
    assert hits[0]["source"] == "mqtt-retained-messages"
    summary = updates[-1]["artifact"]["parts"]
    assert "text" in summary[0] and summary[1]["metadata"] == {"kind": "summary"}
    assert summary[1]["data"]["returned"] == 3
    assert events[-1]["statusUpdate"]["status"]["state"] == "TASK_STATE_COMPLETED"
    (artifact,) = record.task.artifacts or []
    assert artifact.name == "passages" and len(artifact.parts) == 5  # the task store's view after merging


async def test_no_match_completes_with_a_single_chunk_saying_so(agent: ResearchAgent) -> None:
    record, events = await run(agent, "zebra xylophone")
    (update,) = chunks(events)
    assert update["lastChunk"] is True and "append" not in update
    assert update["artifact"]["parts"][0]["text"].startswith("No passages matched")
    assert update["artifact"]["parts"][1]["data"]["returned"] == 0
    assert record.current_state is TaskState.COMPLETED


async def test_bad_input_is_rejected_before_any_event(agent: ResearchAgent) -> None:
    with pytest.raises(TaskRejectedError, match=r"^empty query"):
        await run(agent, "   ")
    with pytest.raises(TaskRejectedError, match="from 1 to 20"):
        await run(agent, "mqtt", topK=50)
    with pytest.raises(TaskRejectedError, match="unknown skill"):
        await run(agent, "mqtt", skill="translate")


async def test_list_sources(agent: ResearchAgent) -> None:
    record, events = await run(agent, "list sources", skill=LIST_SOURCES_SKILL)
    (update,) = chunks(events)
    sources = update["artifact"]["parts"][1]["data"]["sources"]
    assert {source["source"] for source in sources} == {document.id for document in agent.corpus.documents}
    assert record.current_state is TaskState.COMPLETED


def test_card_declares_both_skills(agent: ResearchAgent) -> None:
    card = agent.card()
    assert card.skill_ids() == ["research", LIST_SOURCES_SKILL]
    assert {"research", "search", "corpus", "bm25"} <= set(card.tags())
    assert card.capabilities.streaming is True
