"""The reviewer's handler through the real runtime (a2amesh.testing): no broker, events kept in memory,
including the INPUT_REQUIRED round trip when the audience is missing."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from a2amesh.models import Part, Role, TaskState
from a2amesh.settings import AgentSettings
from a2amesh.testing import AgentHarness, Reply
from agent_reviewer.agent import MAX_QUESTIONS, REVIEW_SKILL, ReviewerAgent

GOOD = (Path(__file__).parent / "good_report.md").read_text()

Harness = AgentHarness[ReviewerAgent]


@pytest.fixture(scope="module")
def harness() -> Harness:
    return AgentHarness(ReviewerAgent(AgentSettings(agent_id="reviewer-unit")))


def review_of(reply: Reply) -> tuple[str, dict[str, Any]]:
    text_part, data_part = reply.sole_artifact("review")["parts"]
    assert data_part["metadata"] == {"kind": "review"}
    return text_part["text"], data_part["data"]


async def test_with_an_audience_it_completes_in_one_turn(harness: Harness) -> None:
    reply = await harness.send(GOOD, audience="executives")
    text, data = review_of(reply)
    assert data["score"] == 100 and data["verdict"] == "accept" and data["audience"] == "executives"
    assert {check["id"] for check in data["checks"]} >= {"length", "citations-resolve", "readability"}
    assert text == "score 100/100 for executives: accept; every check passed."
    assert reply.text == text


async def test_without_an_audience_it_asks_then_completes_with_the_answer(harness: Harness) -> None:
    first = await harness.send(GOOD)
    assert first.state is TaskState.INPUT_REQUIRED
    assert first.text.startswith("Who is the audience for this report")
    assert not first.artifact_updates

    second = await harness.send("General readers, please.", task_id=first.task_id, context_id=first.context_id)
    assert second.notes[0] == "reviewing for general readers"
    _, data = review_of(second)
    assert data["audience"] == "general" and data["verdict"] == "accept"
    assert [m.role for m in second.task.history or []].count(Role.USER) == 2


async def test_the_answer_may_come_as_metadata(harness: Harness) -> None:
    first = await harness.send(GOOD)
    second = await harness.send("see metadata", task_id=first.task_id, message_metadata={"audience": "engineers"})
    assert review_of(second)[1]["audience"] == "engineers"


async def test_an_unclear_answer_is_asked_again_then_rejected(harness: Harness) -> None:
    reply = await harness.send(GOOD)
    for _ in range(MAX_QUESTIONS - 1):
        reply = await harness.send("whoever", task_id=reply.task_id)
        assert reply.state is TaskState.INPUT_REQUIRED
        assert reply.text.startswith("Sorry, 'whoever' does not name exactly one audience. Who is the audience")
    reply = await harness.send("engineers and executives", task_id=reply.task_id)
    assert reply.state is TaskState.REJECTED
    assert reply.text.startswith("no audience: 3 answers named none of engineers, executives")


async def test_the_audience_changes_the_verdict(harness: Harness) -> None:
    long = GOOD.replace("## Sources", "## Appendix\n\n" + "Plain short words help. " * 200 + "\n\n## Sources")
    _, engineers = review_of(await harness.send(long, audience="engineers"))
    _, executives = review_of(await harness.send(long, audience="executives"))
    assert engineers["verdict"] == "accept" and executives["verdict"] == "revise"


async def test_a_flawed_report_completes_with_revise(harness: Harness) -> None:
    text, data = review_of(await harness.send("# Note\n\nOne line [2].\n", audience="engineers"))
    assert data["verdict"] == "revise" and data["score"] < 50
    assert "citations-resolve (no sources list)" in text


async def test_the_writer_outline_next_to_the_report_is_ignored(harness: Harness) -> None:
    parts = [Part(text=GOOD, media_type="text/markdown"), Part(data={"title": "x"}, metadata={"kind": "outline"})]
    _, data = review_of(await harness.send(*parts, audience="general"))
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
    harness: Harness, parts: list[Part], metadata: dict[str, Any], reason: str
) -> None:
    reply = await harness.send(*parts, **metadata)
    assert reply.state is TaskState.REJECTED and re.match(reason, reply.text), reply.text
    assert not reply.artifact_updates


def test_card_skill_has_examples(harness: Harness) -> None:
    card = harness.agent.card()
    assert card.skill_ids() == [REVIEW_SKILL]
    (skill,) = card.skills
    assert skill.examples and len(skill.examples) >= 2
    assert {"reviewer", "review", "citations", "readability", "multi-turn"} <= set(card.tags())
