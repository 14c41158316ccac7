"""The data analyst agent as a real process on a real broker: its retained card, statistics of a data-part table
and of CSV text, a rejection, and a clean SIGTERM exit."""

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
CSV = "region;sales\nnorth;120\nsouth;95\nnorth;80\neast;\n"
TABLE = {"columns": ["region", "sales"], "rows": [["north", 120], ["south", 95], ["north", 80], ["east", None]]}


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


def statistics_of(items: list[dict[str, Any]]) -> dict[str, Any]:
    assert items[-1]["statusUpdate"]["status"]["state"] == "TASK_STATE_COMPLETED", items[-1]
    (update,) = [item["artifactUpdate"] for item in items if "artifactUpdate" in item]
    assert update["artifact"]["name"] == "statistics" and update["lastChunk"] is True
    return update["artifact"]["parts"][1]["data"]


async def test_analyst_agent_describes_tables_over_mqtt(broker: BrokerHandle, tmp_path: Path) -> None:
    agent_id = f"analyst-{short_id()}"
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
    process = stack.service("analyst-x", "agent_analyst", {"MESH_AGENT_ID": agent_id}, ready=lambda: True)
    async with running(watcher):
        try:
            stack.launch(process)
            async with asyncio.timeout(20):
                while True:
                    envelope = await cards.get()
                    if envelope.payload and envelope.user_properties.get(STATUS_PROPERTY) == "online":
                        break
            card = json.loads(envelope.payload)
            assert card["name"] == "Data Analyst Agent"
            assert [skill["id"] for skill in card["skills"]] == ["analyze-table"]
            assert len(card["skills"][0]["examples"]) == 3

            async with running(requester):
                from_data = await stream(requester, agent, [{"data": TABLE}])
                from_csv = await stream(requester, agent, [{"text": CSV}])
                ragged = await stream(requester, agent, [{"text": "region,sales\nnorth,120,extra\n"}])
        finally:
            codes = await asyncio.to_thread(stack.stop)
            with contextlib.suppress(Exception):
                await watcher.publish(agent.discovery_topic, b"", retain=True)  # leave no retained card behind
        assert codes == {"analyst-x": 0}, process.log_tail()

    stats = statistics_of(from_data)
    assert stats["rowCount"] == 4 and stats["numericColumns"] == ["sales"] and stats["textColumns"] == ["region"]
    region, sales = stats["columns"]
    assert sales == {
        "name": "sales",
        "type": "numeric",
        "count": 3,
        "missing": 1,
        "mean": 98.333333,
        "median": 95,
        "min": 80,
        "max": 120,
        "stdev": 20.207259,
        "sum": 295,
    }
    assert region["distinct"] == 3 and region["top"][0] == {"value": "north", "count": 2}
    assert statistics_of(from_csv) == stats  # the same table as CSV text

    final = ragged[-1]["statusUpdate"]["status"]
    assert final["state"] == "TASK_STATE_REJECTED"
    assert final["message"]["parts"][0]["text"] == "ragged rows: CSV line 2 has 3 fields, the header has 2"
    assert not any("artifactUpdate" in item for item in ragged)
