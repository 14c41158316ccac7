"""The writer's handler through the real runtime (a2amesh.testing): no broker, events kept in memory."""

from __future__ import annotations

import re
from typing import Any

import pytest

from a2amesh.models import Part, TaskState
from a2amesh.settings import AgentSettings
from a2amesh.testing import AgentHarness, Reply
from agent_writer.agent import WRITE_SKILL, WriterAgent

HITS = [
    {"rank": 1, "score": 7.1, "source": "mqtt-retained", "title": "Retained Messages", "passage": "A retained "
     "message is kept by the broker. New subscribers receive it at once."},
    {"rank": 2, "score": 5.0, "source": "mqtt-last-will", "title": "Last Will", "passage": "The broker publishes "
     "the will message when a client disconnects without saying goodbye."},
    {"rank": 3, "score": 4.2, "source": "mqtt-retained", "title": "Retained Messages", "passage": "Publish an "
     "empty retained payload to delete the retained message."},
]  # fmt: skip


Harness = AgentHarness[WriterAgent]


@pytest.fixture(scope="module")
def harness() -> Harness:
    return AgentHarness(WriterAgent(AgentSettings(agent_id="writer-unit")))


def report_of(reply: Reply) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """The report's Markdown, its outline, and the artifact (wire form) that carried them."""
    artifact = reply.sole_artifact("report")
    markdown_part, outline_part = artifact["parts"]
    return markdown_part["text"], outline_part["data"], artifact


async def test_passages_one_per_part_become_a_cited_report(harness: Harness) -> None:
    reply = await harness.send(Part(text="Retained messages and wills"), *(Part(data=hit) for hit in HITS))
    assert reply.notes[0] == "writing from 3 passages"
    markdown, outline, artifact = report_of(reply)
    assert artifact["parts"][0]["mediaType"] == "text/markdown"
    assert artifact["parts"][1]["metadata"] == {"kind": "outline"}
    assert markdown.startswith("# Retained messages and wills\n\n## Summary\n")
    assert "## Retained Messages" in markdown and "## Last Will" in markdown
    assert "1. Retained Messages (`mqtt-retained`)\n2. Last Will (`mqtt-last-will`)" in markdown
    assert set(re.findall(r"\[(\d+)\]", markdown)) == {"1", "2"}
    assert outline["passages"] == 3 and [s["source"] for s in outline["sources"]] == ["mqtt-retained", "mqtt-last-will"]
    assert reply.text.startswith("report 'Retained messages and wills': ")


async def test_same_input_same_report(harness: Harness) -> None:
    first = report_of(await harness.send("T", Part(data=HITS)))[0]
    again = report_of(await harness.send("T", Part(data=list(reversed(HITS)))))[0]
    assert first == again


async def test_the_research_artifact_supplies_the_topic_when_the_text_is_blank(
    harness: Harness,
) -> None:
    summary = {"query": "retained messages", "topK": 3, "searched": 80, "returned": 3, "sources": []}
    artifact = {"name": "passages", "parts": [*({"data": hit} for hit in HITS), {"data": summary}]}
    markdown, _, _ = report_of(await harness.send(Part(data=artifact)))
    assert markdown.startswith("# retained messages\n")


async def test_without_text_or_query_the_best_source_names_the_report(harness: Harness) -> None:
    markdown, _, _ = report_of(await harness.send(Part(data=HITS)))
    assert markdown.startswith("# Notes on Retained Messages\n")


async def test_plain_text_passages(harness: Harness) -> None:
    text = "# Reliable delivery\n\n[mqtt-qos] QoS 1 retries until acknowledged.\n\n[idempotency] Handle duplicates."
    markdown, outline, _ = report_of(await harness.send(text))
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
async def test_unusable_input_is_rejected_with_the_reason(harness: Harness, parts: list[Part], reason: str) -> None:
    reply = await harness.send(*parts)
    assert reply.state is TaskState.REJECTED and re.search(reason, reply.text), reply.text
    assert not reply.artifact_updates


async def test_another_skill_is_rejected(harness: Harness) -> None:
    reply = await harness.send(Part(data=HITS), skill="review-report")
    assert reply.state is TaskState.REJECTED and reply.text.startswith("unknown skill 'review-report'")
    assert (await harness.send(Part(data=HITS), skill=WRITE_SKILL)).state is TaskState.COMPLETED


def test_card_skill_has_examples(harness: Harness) -> None:
    card = harness.agent.card()
    assert card.skill_ids() == [WRITE_SKILL]
    (skill,) = card.skills
    assert skill.examples and len(skill.examples) >= 2
    assert {"writer", "report", "markdown", "citations"} <= set(card.tags())
    assert "text/markdown" in card.default_output_modes
