"""The research agent as a real process on a real broker: its retained card, a streamed search, a rejection,
and a clean SIGTERM exit."""

from __future__ import annotations

from pathlib import Path

from devstack.agent_testing import agent_process
from devstack.fixtures import BrokerHandle


async def test_research_agent_streams_passages_over_mqtt(broker: BrokerHandle, tmp_path: Path) -> None:
    async with agent_process(broker, tmp_path, "agent_research", "research") as agent:
        card = agent.card
        assert card["name"] == "Research Agent"
        assert [skill["id"] for skill in card["skills"]] == ["research", "list-sources"]
        assert card["capabilities"]["streaming"] is True
        items = await agent.stream("How do I delete a retained message?", topK=3)
        rejected = await agent.stream("   ")

    # the streamed search
    assert "task" in items[0]
    assert items[-1]["statusUpdate"]["status"]["state"] == "TASK_STATE_COMPLETED"
    notes = [item["statusUpdate"]["status"].get("message") for item in items if "statusUpdate" in item]
    assert any(note and note["parts"][0]["text"].startswith("searching ") for note in notes)
    updates = [item["artifactUpdate"] for item in items if "artifactUpdate" in item]
    assert len(updates) == 4, updates  # three passages, then the summary
    assert {update["artifact"]["artifactId"] for update in updates} == {updates[0]["artifact"]["artifactId"]}
    assert all(update["artifact"]["name"] == "passages" for update in updates)
    assert not updates[0].get("append") and all(update["append"] for update in updates[1:])
    assert [update.get("lastChunk") for update in updates] == [False, False, False, True]
    hits = [update["artifact"]["parts"][0]["data"] for update in updates[:3]]
    assert [hit["rank"] for hit in hits] == [1, 2, 3]
    assert hits[0]["source"] == "mqtt-retained-messages"
    assert set(hits[0]) == {"rank", "score", "source", "title", "passage"}
    assert hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"] > 0
    summary = updates[-1]["artifact"]["parts"][1]["data"]
    assert summary["returned"] == 3 and summary["sources"][0]["source"] == "mqtt-retained-messages"

    # the empty query
    final = rejected[-1]["statusUpdate"]["status"]
    assert final["state"] == "TASK_STATE_REJECTED"
    assert final["message"]["parts"][0]["text"].startswith("empty query:")
    assert not any("artifactUpdate" in item for item in rejected)
