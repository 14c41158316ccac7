"""Helpers for the registry's tests: cards, fresh addresses, bounded polling, a handle on a registry process
and a card publisher."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiomqtt
import httpx

from a2amesh.mqtt import make_client, publish_properties
from a2amesh.mqtt_base import STATUS_PROPERTY, STATUS_SOURCE_PROPERTY
from a2amesh.settings import MqttSettings
from a2amesh.topics import AgentAddress
from devstack.processes import ManagedProcess, http_ready
from devstack.stack import Stack

REGISTRY_DB = 3
"""The Redis database the registry under test uses, so flushing it touches nothing else on the session Redis."""

ORG = "regtest"
T = TypeVar("T")


async def eventually(probe: Callable[[], Awaitable[T | None]], within: float = 10.0, what: str = "condition") -> T:
    """Poll `probe` until it returns something truthy (bounded in time); that value."""
    deadline = time.monotonic() + within
    last: T | None = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what} not met within {within}s (last: {last!r})")


def new_address(prefix: str = "agent") -> AgentAddress:
    """A fresh agent address: the broker is shared by the session, so ids never repeat."""
    return AgentAddress(ORG, "unit1", f"{prefix}-{uuid.uuid4().hex[:10]}")


def card(name: str, skills: list[dict[str, Any]] | None = None, url: str = "mqtt://broker") -> dict[str, Any]:
    """A valid Agent Card (wire JSON)."""
    return {
        "name": name,
        "description": f"{name} for tests",
        "version": "1.0.0",
        "supportedInterfaces": [{"url": url, "protocolBinding": "MQTTv5+JSONRPCv2", "protocolVersion": "1.0"}],
        "capabilities": {"streaming": True},
        "defaultInputModes": ["text/plain"],
        "defaultOutputModes": ["text/plain"],
        "skills": skills if skills is not None else [],
    }


def skill(skill_id: str, *tags: str) -> dict[str, Any]:
    return {"id": skill_id, "name": skill_id, "description": f"does {skill_id}", "tags": list(tags)}


@dataclass
class Registry:
    """A registry process under test and how to reach it."""

    stack: Stack
    process: ManagedProcess
    url: str
    redis_url: str

    @property
    def log_path(self) -> Path:
        return self.process.log_path

    async def get(self, path: str, **params: str) -> httpx.Response:
        async with httpx.AsyncClient(base_url=self.url, timeout=5.0) as client:
            return await client.get(path, params=params)

    async def record(self, address: AgentAddress) -> dict[str, Any] | None:
        response = await self.get(f"/agents/{address}")
        return response.json() if response.status_code == 200 else None

    async def wait_record(
        self, address: AgentAddress, check: Callable[[dict[str, Any]], bool] = bool, within: float = 10.0
    ) -> dict[str, Any]:
        """The agent's record once `check` accepts it."""

        async def probe() -> dict[str, Any] | None:
            record = await self.record(address)
            return record if record is not None and check(record) else None

        return await eventually(probe, within, f"record of {address}")

    async def wait_gone(self, address: AgentAddress, within: float = 10.0) -> None:
        async def probe() -> bool:
            return (await self.get(f"/agents/{address}")).status_code == 404

        await eventually(probe, within, f"{address} removed")

    async def wait_log(self, *needles: str, within: float = 10.0) -> str:
        """The first log line containing every needle."""

        async def probe() -> str | None:
            text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
            return next((line for line in text.splitlines() if all(n in line for n in needles)), None)

        return await eventually(probe, within, f"log line with {needles}")


def start_registry(
    stack: Stack, redis_url: str, check_interval: float = 0.5, timeout: float = 30.0
) -> tuple[ManagedProcess, str]:
    """Launch `python -m mesh_registry` as part of `stack`, against `redis_url`; the process and its URL."""
    url = f"http://127.0.0.1:{stack.ports.registry}"
    env = {
        "MESH_REDIS_URL": redis_url,
        "MESH_HTTP_PORT": str(stack.ports.registry),
        "MESH_INDEX_CHECK_INTERVAL": str(check_interval),
    }
    process = stack.launch(stack.service("registry", "mesh_registry", env, http_ready(f"{url}/healthz")), timeout)
    return process, url


@dataclass
class Publisher:
    """Publishes cards the way agents do (retained, QoS 1, status in user properties) and remembers the topics
    so the fixture can clear them afterwards."""

    client: aiomqtt.Client
    topics: set[str] = field(default_factory=set)

    async def publish(
        self,
        address: AgentAddress,
        payload: dict[str, Any] | str | bytes,
        status: str | None = "online",
        source: str | None = "agent",
        load: str | float | None = None,
    ) -> None:
        user = [(STATUS_PROPERTY, status)] if status is not None else []
        user += [(STATUS_SOURCE_PROPERTY, source)] if source is not None else []
        user += [("a2a-load", str(load))] if load is not None else []
        body = payload if isinstance(payload, str | bytes) else json.dumps(payload)
        self.topics.add(address.discovery_topic)
        await self.client.publish(
            address.discovery_topic, body, qos=1, retain=True, properties=publish_properties(user=user)
        )

    async def clear(self, address: AgentAddress) -> None:
        """Remove the retained card: what an agent does to unregister."""
        await self.client.publish(address.discovery_topic, b"", qos=1, retain=True)


@contextlib.asynccontextmanager
async def open_publisher(settings: MqttSettings) -> AsyncIterator[Publisher]:
    """A publisher that clears every card it published when the block ends."""
    async with make_client(settings, f"regtest-pub-{uuid.uuid4().hex[:10]}") as client:
        publisher = Publisher(client)
        yield publisher
        for topic in publisher.topics:
            await client.publish(topic, b"", qos=1, retain=True)
