"""Test support for one agent as a real process on the session broker: start it, wait until its retained card says
online (so it is subscribed), ask it over the binding, and stop it (exit 0), leaving no retained card behind.
Every agent's own process test uses this, and `make new-agent` generates one that does."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from a2amesh.binding import MeshRequester
from a2amesh.mqtt import Envelope, MqttLink
from a2amesh.mqtt_base import STATUS_PROPERTY
from a2amesh.topics import AgentAddress
from devstack.fixtures import BrokerHandle
from devstack.processes import ManagedProcess
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


@dataclass
class AgentUnderTest:
    """A running agent process, its card as published, and a connected requester to ask it with."""

    address: AgentAddress
    card: dict[str, Any]
    process: ManagedProcess
    requester: MeshRequester

    async def stream(self, message: dict[str, Any] | str, **metadata: Any) -> list[dict[str, Any]]:
        """Every StreamResponse of one SendStreamingMessage, in arrival order. `message` is text, or the message's
        fields (parts, and taskId/contextId to continue a task); a new task id is made when none is given."""
        fields = {"parts": [{"text": message}]} if isinstance(message, str) else dict(message)
        fields.setdefault("taskId", str(uuid.uuid4()))
        params: dict[str, Any] = {"message": {"messageId": uuid.uuid4().hex, "role": "ROLE_USER", **fields}}
        if metadata:
            params["metadata"] = metadata
        async with asyncio.timeout(30):
            stream = self.requester.request(self.address.request_topic, "SendStreamingMessage", params)
            return [item async for item in stream.results()]


@contextlib.asynccontextmanager
async def agent_process(
    broker: BrokerHandle, run_dir: Path, package: str, name: str, env: dict[str, str] | None = None
) -> AsyncIterator[AgentUnderTest]:
    """Run `python -m <package>` as agent `<name>-<random>` on the session broker until the block ends (`env`: more
    MESH_* settings for it, e.g. MESH_MAX_CONCURRENT)."""
    agent_id = f"{name}-{short_id()}"
    address = AgentAddress(ORG, UNIT, agent_id)
    cards: asyncio.Queue[Envelope] = asyncio.Queue()

    async def on_card(envelope: Envelope) -> None:
        await cards.put(envelope)

    watcher = MqttLink(broker.settings, f"{ORG}/{UNIT}/watch-{short_id()}", [address.discovery_topic], on_card)
    requester = MeshRequester(broker.settings, AgentAddress(ORG, UNIT, f"tester-{short_id()}"))
    ports = Ports(mqtt=broker.port, redis=0, registry=0, taskstore=0, coordinator=0)
    stack = Stack(run_dir=run_dir, ports=ports, broker_of=broker.stack)
    settings = {"MESH_AGENT_ID": agent_id, "MESH_HTTP_PORT": "0", **(env or {})}
    process = stack.service(agent_id, package, settings, ready=lambda: True)
    async with running(watcher):
        try:
            stack.launch(process)
            async with asyncio.timeout(20):  # ready = its retained card online (so it is subscribed too)
                while True:
                    envelope = await cards.get()
                    if envelope.payload and envelope.user_properties.get(STATUS_PROPERTY) == "online":
                        break
            async with running(requester):
                yield AgentUnderTest(address, json.loads(envelope.payload), process, requester)
        finally:
            codes = await asyncio.to_thread(stack.stop)
            with contextlib.suppress(Exception):
                await watcher.publish(address.discovery_topic, b"", retain=True)  # leave no retained card behind
    assert codes == {agent_id: 0}, process.log_tail()
