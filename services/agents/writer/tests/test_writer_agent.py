"""The writer agent as a real process on a real broker: its retained card, a report streamed from passages, a
rejection, and a clean SIGTERM exit."""

from __future__ import annotations

import re
from pathlib import Path

from devstack.agent_testing import agent_process
from devstack.fixtures import BrokerHandle

ORG, UNIT = "acme", "default"
HITS = [
    {"rank": 1, "score": 6.2, "source": "mqtt-qos-levels", "title": "MQTT QoS Levels",
     "passage": "QoS 1 delivers every message at least once. The sender stores it until the PUBACK arrives."},
    {"rank": 2, "score": 4.8, "source": "idempotency", "title": "Idempotency",
     "passage": "Duplicates are harmless when the handler is idempotent. A unique key turns a retry into a no-op."},
]  # fmt: skip


async def test_writer_agent_writes_a_cited_report_over_mqtt(broker: BrokerHandle, tmp_path: Path) -> None:
    async with agent_process(broker, tmp_path, "agent_writer", "writer") as agent:
        card = agent.card
        assert card["name"] == "Writer Agent"
        assert [skill["id"] for skill in card["skills"]] == ["write-report"]
        assert card["skills"][0]["examples"]
        parts = [{"text": "Reliable delivery on the mesh"}, *({"data": hit} for hit in HITS)]
        items = await agent.stream({"parts": parts})
        rejected = await agent.stream({"parts": [{"text": "Write about MQTT"}]})

    assert "task" in items[0]
    assert items[-1]["statusUpdate"]["status"]["state"] == "TASK_STATE_COMPLETED"
    (update,) = [item["artifactUpdate"] for item in items if "artifactUpdate" in item]
    assert update["artifact"]["name"] == "report" and update["lastChunk"] is True
    markdown_part, outline_part = update["artifact"]["parts"]
    assert markdown_part["mediaType"] == "text/markdown"
    markdown = markdown_part["text"]
    assert markdown.startswith("# Reliable delivery on the mesh\n\n## Summary\n")
    assert "## MQTT QoS Levels" in markdown and "## Idempotency" in markdown
    sources = "## Sources\n\n1. MQTT QoS Levels (`mqtt-qos-levels`)\n2. Idempotency (`idempotency`)\n"
    assert markdown.endswith(sources)
    assert set(re.findall(r"\[(\d+)\]", markdown)) == {"1", "2"}
    assert outline_part["data"]["passages"] == 2

    final = rejected[-1]["statusUpdate"]["status"]
    assert final["state"] == "TASK_STATE_REJECTED"
    assert final["message"]["parts"][0]["text"].startswith("no passages:")
    assert not any("artifactUpdate" in item for item in rejected)
