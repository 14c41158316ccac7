"""The research agent as a real process on a real broker: its retained card, a streamed search, a rejection,
and a clean SIGTERM exit."""

from __future__ import annotations

import asyncio
import contextlib
import json
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


async def stream(requester: MeshRequester, agent: AgentAddress, text: str, **metadata: Any) -> list[dict[str, Any]]:
    """Every StreamResponse of one SendStreamingMessage, in arrival order."""
    message = {
        "messageId": uuid.uuid4().hex,
        "role": "ROLE_USER",
        "parts": [{"text": text}],
        "taskId": str(uuid.uuid4()),
    }
    params: dict[str, Any] = {"message": message}
    if metadata:
        params["metadata"] = metadata
    async with asyncio.timeout(30):
        return [item async for item in requester.request(agent.request_topic, "SendStreamingMessage", params).results()]


async def test_research_agent_streams_passages_over_mqtt(broker: BrokerHandle, tmp_path: Path) -> None:
    agent_id = f"research-{short_id()}"
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
    process = stack.service("research-x", "agent_research", {"MESH_AGENT_ID": agent_id}, ready=lambda: True)
    async with running(watcher):
        try:
            stack.launch(process)
            # ready = its retained card is on the discovery topic, marked online (so it is subscribed too)
            async with asyncio.timeout(20):
                while True:
                    envelope = await cards.get()
                    if envelope.payload and envelope.user_properties.get(STATUS_PROPERTY) == "online":
                        break
            card = json.loads(envelope.payload)
            assert card["name"] == "Research Agent"
            assert [skill["id"] for skill in card["skills"]] == ["research", "list-sources"]
            assert card["capabilities"]["streaming"] is True

            async with running(requester):
                items = await stream(requester, agent, "How do I delete a retained message?", topK=3)
                rejected = await stream(requester, agent, "   ")
        finally:
            codes = await asyncio.to_thread(stack.stop)
            with contextlib.suppress(Exception):
                await watcher.publish(agent.discovery_topic, b"", retain=True)  # leave no retained card behind
        assert codes == {"research-x": 0}, process.log_tail()

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
