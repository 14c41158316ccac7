"""The research agent's handler through the real runtime (a2amesh.testing): no broker, events kept in memory."""

from __future__ import annotations

import pytest

from a2amesh.models import TaskState
from a2amesh.settings import AgentSettings
from a2amesh.testing import AgentHarness
from agent_research.agent import LIST_SOURCES_SKILL, ResearchAgent

Harness = AgentHarness[ResearchAgent]


@pytest.fixture(scope="module")
def harness() -> Harness:
    return AgentHarness(ResearchAgent(AgentSettings(agent_id="research-unit")))


async def test_results_stream_as_chunks_of_one_artifact(harness: Harness) -> None:
    reply = await harness.send("How are retained messages deleted?", topK=3)
    assert reply.notes[0].startswith("searching ")
    updates = reply.artifact_updates
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
    assert reply.state is TaskState.COMPLETED
    (artifact,) = reply.artifacts
    assert artifact.name == "passages" and len(artifact.parts) == 5  # the task store's view after merging


async def test_no_match_completes_with_a_single_chunk_saying_so(harness: Harness) -> None:
    reply = await harness.send("zebra xylophone")
    (update,) = reply.artifact_updates
    assert update["lastChunk"] is True and "append" not in update
    assert update["artifact"]["parts"][0]["text"].startswith("No passages matched")
    assert update["artifact"]["parts"][1]["data"]["returned"] == 0
    assert reply.state is TaskState.COMPLETED and reply.text == "no passages matched"


@pytest.mark.parametrize(
    ("text", "metadata", "reason"),
    [
        ("   ", {}, "empty query"),
        ("the and of", {}, "empty query: 'the and of' has no searchable terms"),
        ("mqtt", {"topK": 50}, "metadata.topK must be an integer from 1 to 20"),
        ("mqtt", {"skill": "translate"}, "unknown skill 'translate'"),
    ],
)
async def test_bad_input_is_rejected_before_any_artifact(
    harness: Harness, text: str, metadata: dict[str, object], reason: str
) -> None:
    reply = await harness.send(text, **metadata)
    assert reply.state is TaskState.REJECTED and reply.text.startswith(reason), reply.text
    assert not reply.artifact_updates


async def test_list_sources(harness: Harness) -> None:
    reply = await harness.send("list sources", skill=LIST_SOURCES_SKILL)
    (update,) = reply.artifact_updates
    sources = update["artifact"]["parts"][1]["data"]["sources"]
    assert {source["source"] for source in sources} == {document.id for document in harness.agent.corpus.documents}
    assert reply.state is TaskState.COMPLETED


def test_card_declares_both_skills(harness: Harness) -> None:
    card = harness.agent.card()
    assert card.skill_ids() == ["research", LIST_SOURCES_SKILL]
    assert {"research", "search", "corpus", "bm25"} <= set(card.tags())
    assert card.capabilities.streaming is True
