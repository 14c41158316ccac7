"""The reviewer's handler against the real TaskContext, with events collected in memory instead of sent over MQTT,
including the INPUT_REQUIRED round trip when the audience is missing."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from a2amesh.agent import TaskRejectedError
from a2amesh.binding.tasks import TaskContext, TaskRecord
from a2amesh.models import JsonRpcRequest, Message, Part, Role, StreamResponse, Task, TaskState, TaskStatus
from a2amesh.settings import AgentSettings
from agent_reviewer.agent import MAX_QUESTIONS, REVIEW_SKILL, ReviewerAgent

GOOD = (Path(__file__).parent / "good_report.md").read_text()


@pytest.fixture(scope="module")
def agent() -> ReviewerAgent:
    return ReviewerAgent(AgentSettings(agent_id="reviewer-unit"))


class Conversation:
    """One task driven turn by turn as the responder drives it: a new user message, then the handler again."""

    def __init__(self, agent: ReviewerAgent, **metadata: Any) -> None:
        self.agent = agent
        task_id = str(uuid.uuid4())
        task = Task(id=task_id, context_id="c1", status=TaskStatus(state=TaskState.SUBMITTED), history=[])
        request = JsonRpcRequest(jsonrpc="2.0", id=1, method="SendStreamingMessage", params={})
        self.record = TaskRecord(task=task, request=request, request_metadata=metadata)
        self.events: list[dict[str, Any]] = []

    async def emit(self, record: TaskRecord, item: StreamResponse) -> None:
        record.apply(item)
        self.events.append(item.to_wire())

    async def send(self, *parts: Part, metadata: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """One turn; the events it produced."""
        message = Message(
            message_id=uuid.uuid4().hex,
            role=Role.USER,
            parts=list(parts),
            task_id=self.record.id,
            context_id="c1",
            metadata=metadata,
        )
        self.record.task.history = [*(self.record.task.history or []), message]
        start = len(self.events)
        context = TaskContext(self.record, self.emit)
        await context.working()
        await self.agent.handle(context)
        return self.events[start:]

    @property
    def state(self) -> TaskState:
        return self.record.current_state


def last_status(events: list[dict[str, Any]]) -> tuple[str, str]:
    status = events[-1]["statusUpdate"]["status"]
    return status["state"], status.get("message", {}).get("parts", [{}])[0].get("text", "")


def review_of(events: list[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    (update,) = [event["artifactUpdate"] for event in events if "artifactUpdate" in event]
    assert update["artifact"]["name"] == "review" and update["lastChunk"] is True
    text_part, data_part = update["artifact"]["parts"]
    assert data_part["metadata"] == {"kind": "review"}
    return text_part["text"], data_part["data"]


async def test_with_an_audience_it_completes_in_one_turn(agent: ReviewerAgent) -> None:
    conversation = Conversation(agent, audience="executives")
    events = await conversation.send(Part(text=GOOD))
    text, data = review_of(events)
    assert data["score"] == 100 and data["verdict"] == "accept" and data["audience"] == "executives"
    assert {check["id"] for check in data["checks"]} >= {"length", "citations-resolve", "readability"}
    assert text == "score 100/100 for executives: accept; every check passed."
    assert last_status(events) == ("TASK_STATE_COMPLETED", text)
    assert conversation.state is TaskState.COMPLETED


async def test_without_an_audience_it_asks_then_completes_with_the_answer(agent: ReviewerAgent) -> None:
    conversation = Conversation(agent)
    first = await conversation.send(Part(text=GOOD))
    state, question = last_status(first)
    assert state == "TASK_STATE_INPUT_REQUIRED" and question.startswith("Who is the audience for this report")
    assert not any("artifactUpdate" in event for event in first)

    second = await conversation.send(Part(text="General readers, please."))
    assert second[1]["statusUpdate"]["status"]["message"]["parts"][0]["text"] == "reviewing for general readers"
    _, data = review_of(second)
    assert data["audience"] == "general" and data["verdict"] == "accept"
    assert conversation.state is TaskState.COMPLETED
    assert [m.role for m in conversation.record.task.history or []].count(Role.USER) == 2


async def test_the_answer_may_come_as_metadata(agent: ReviewerAgent) -> None:
    conversation = Conversation(agent)
    await conversation.send(Part(text=GOOD))
    _, data = review_of(await conversation.send(Part(text="see metadata"), metadata={"audience": "engineers"}))
    assert data["audience"] == "engineers"


async def test_an_unclear_answer_is_asked_again_then_rejected(agent: ReviewerAgent) -> None:
    conversation = Conversation(agent)
    await conversation.send(Part(text=GOOD))
    for _ in range(MAX_QUESTIONS - 1):
        state, question = last_status(await conversation.send(Part(text="whoever")))
        assert state == "TASK_STATE_INPUT_REQUIRED"
        assert question.startswith("Sorry, 'whoever' does not name exactly one audience. Who is the audience")
    with pytest.raises(TaskRejectedError, match=r"^no audience: 3 answers named none of engineers, executives"):
        await conversation.send(Part(text="engineers and executives"))


async def test_the_audience_changes_the_verdict(agent: ReviewerAgent) -> None:
    long = GOOD.replace("## Sources", "## Appendix\n\n" + "Plain short words help. " * 200 + "\n\n## Sources")
    _, engineers = review_of(await Conversation(agent, audience="engineers").send(Part(text=long)))
    _, executives = review_of(await Conversation(agent, audience="executives").send(Part(text=long)))
    assert engineers["verdict"] == "accept" and executives["verdict"] == "revise"


async def test_a_flawed_report_completes_with_revise(agent: ReviewerAgent) -> None:
    events = await Conversation(agent, audience="engineers").send(Part(text="# Note\n\nOne line [2].\n"))
    text, data = review_of(events)
    assert data["verdict"] == "revise" and data["score"] < 50
    assert "citations-resolve (no sources list)" in text
    assert last_status(events)[0] == "TASK_STATE_COMPLETED"


async def test_the_writer_outline_next_to_the_report_is_ignored(agent: ReviewerAgent) -> None:
    parts = [Part(text=GOOD, media_type="text/markdown"), Part(data={"title": "x"}, metadata={"kind": "outline"})]
    _, data = review_of(await Conversation(agent, audience="general").send(*parts))
    assert data["score"] == 100


@pytest.mark.parametrize(
    ("parts", "metadata", "reason"),
    [
        ([Part(text="   \n")], {}, r"^empty report: "),
        ([Part(data={"report": "# T"})], {}, r"^unsupported input: only data parts and no report text"),
        ([Part(url="https://example.com/report.md")], {}, r"^unsupported input: url parts are not read"),
        ([Part(text=GOOD), Part(raw=b"%PDF")], {}, r"^unsupported input: raw parts are not read"),
        ([Part(text="x" * 200_001)], {}, r"^report too long"),
        ([Part(text=GOOD)], {"audience": "aliens"}, r"^metadata.audience must be one of engineers, executives, gen"),
        ([Part(text=GOOD)], {"audience": 3}, r"^metadata.audience must be one of"),
        ([Part(text=GOOD)], {"skill": "write-report"}, r"^unknown skill 'write-report'"),
    ],
)
async def test_bad_input_is_rejected_with_the_reason(
    agent: ReviewerAgent, parts: list[Part], metadata: dict[str, Any], reason: str
) -> None:
    conversation = Conversation(agent, **metadata)
    with pytest.raises(TaskRejectedError, match=reason):
        await conversation.send(*parts)
    assert not any("artifactUpdate" in event for event in conversation.events)


def test_card_skill_has_examples(agent: ReviewerAgent) -> None:
    card = agent.card()
    assert card.skill_ids() == [REVIEW_SKILL]
    (skill,) = card.skills
    assert skill.examples and len(skill.examples) >= 2
    assert {"reviewer", "review", "citations", "readability", "multi-turn"} <= set(card.tags())
