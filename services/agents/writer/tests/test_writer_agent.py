"""The writer agent as a real process on a real broker: its retained card, a report streamed from passages, a
rejection, and a clean SIGTERM exit."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from a2amesh.binding import MeshRequester
from a2amesh.mqtt import STATUS_PROPERTY, Envelope, MqttLink
from a2amesh.topics import AgentAddress
from devstack.fixtures import BrokerHandle
from devstack.stack import Ports, Stack

ORG, UNIT = "acme", "default"
HITS = [
    {"rank": 1, "score": 6.2, "source": "mqtt-qos-levels", "title": "MQTT QoS Levels",
     "passage": "QoS 1 delivers every message at least once. The sender stores it until the PUBACK arrives."},
    {"rank": 2, "score": 4.8, "source": "idempotency", "title": "Idempotency",
     "passage": "Duplicates are harmless when the handler is idempotent. A unique key turns a retry into a no-op."},
]  # fmt: skip


def short_id() -> str:
    return uuid.uuid4().hex[:8]


@contextlib.asynccontextmanager
async def running(link: MqttLink | MeshRequester) -> AsyncIterator[None]:
    """Keep a link (or requester) connected for the duration of the block."""
    stop = asyncio.Event()
    task = asyncio.create_task(link.run(stop))
    connected = link.link.connected if isinstance(link, MeshRequester) else link.connected
    try:
        async with asyncio.timeout(10):
            await connected.wait()
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=10)


async def stream(requester: MeshRequester, agent: AgentAddress, parts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every StreamResponse of one SendStreamingMessage, in arrival order."""
    message = {"messageId": uuid.uuid4().hex, "role": "ROLE_USER", "parts": parts, "taskId": str(uuid.uuid4())}
    async with asyncio.timeout(30):
        replies = requester.request(agent.request_topic, "SendStreamingMessage", {"message": message})
        return [item async for item in replies.results()]


async def test_writer_agent_writes_a_cited_report_over_mqtt(broker: BrokerHandle, tmp_path: Path) -> None:
    agent_id = f"writer-{short_id()}"
    agent = AgentAddress(ORG, UNIT, agent_id)
    cards: asyncio.Queue[Envelope] = asyncio.Queue()

    async def on_card(envelope: Envelope) -> None:
        await cards.put(envelope)

    watcher = MqttLink(broker.settings, f"{ORG}/{UNIT}/watch-{short_id()}", [agent.discovery_topic], on_card)
    requester = MeshRequester(broker.settings, AgentAddress(ORG, UNIT, f"tester-{short_id()}"))
    stack = Stack(
        run_dir=tmp_path,
        ports=Ports(mqtt=broker.port, redis=0, registry=0, taskstore=0, coordinator=0),
        broker_of=broker.stack,
    )
    process = stack.service("writer-x", "agent_writer", {"MESH_AGENT_ID": agent_id}, ready=lambda: True)
    async with running(watcher):
        try:
            stack.launch(process)
            async with asyncio.timeout(20):
                while True:
                    envelope = await cards.get()
                    if envelope.payload and envelope.user_properties.get(STATUS_PROPERTY) == "online":
                        break
            card = json.loads(envelope.payload)
            assert card["name"] == "Writer Agent"
            assert [skill["id"] for skill in card["skills"]] == ["write-report"]
            assert card["skills"][0]["examples"]

            async with running(requester):
                parts = [{"text": "Reliable delivery on the mesh"}, *({"data": hit} for hit in HITS)]
                items = await stream(requester, agent, parts)
                rejected = await stream(requester, agent, [{"text": "Write about MQTT"}])
        finally:
            codes = await asyncio.to_thread(stack.stop)
            with contextlib.suppress(Exception):
                await watcher.publish(agent.discovery_topic, b"", retain=True)  # leave no retained card behind
        assert codes == {"writer-x": 0}, process.log_tail()

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
