"""Helpers for the cross-service tests: an a2a-sdk client on the running mesh, and bounded polling."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from a2a.client import A2ACardResolver, Client, ClientConfig, ClientFactory
from a2a.types import a2a_pb2 as pb

from a2amesh.mqtt import make_client as mqtt_client
from a2amesh.topics import AgentAddress
from devstack.stack import Stack


@pytest.fixture
async def http(mesh: Stack) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client that presents the mesh's API key, as a configured A2A client would."""
    async with httpx.AsyncClient(timeout=30.0, headers=auth_headers(mesh)) as client:
        yield client


def auth_headers(stack: Stack) -> dict[str, str]:
    """The coordinator's credentials for `stack`."""
    return {"Authorization": f"Bearer {stack.api_key}"}


@pytest.fixture
async def card(mesh: Stack, http: httpx.AsyncClient) -> pb.AgentCard:
    return await A2ACardResolver(http, mesh.coordinator_url).get_agent_card()


@pytest.fixture
def make_client(card: pb.AgentCard, http: httpx.AsyncClient) -> Callable[..., Client]:
    """An a2a-sdk client on the coordinator, streaming or not, over JSON-RPC (default) or HTTP+JSON."""

    def make(streaming: bool = False, transport: str = "JSONRPC") -> Client:
        config = ClientConfig(httpx_client=http, streaming=streaming, supported_protocol_bindings=[transport])
        return ClientFactory(config).create(card)

    return make


def user_message(text: str | None = None, *, data: Any = None, task_id: str = "", context_id: str = "") -> pb.Message:
    parts = [pb.Part(text=text)] if text is not None else []
    if data is not None:
        part = pb.Part()
        part.data.struct_value.update(data)
        parts.append(part)
    return pb.Message(
        message_id=uuid.uuid4().hex, role=pb.ROLE_USER, parts=parts, task_id=task_id, context_id=context_id
    )


def send_request(
    message: pb.Message, *, skill: str | None = None, return_immediately: bool = False, **metadata: Any
) -> pb.SendMessageRequest:
    request = pb.SendMessageRequest(message=message)
    if skill is not None:
        metadata["skill"] = skill
    if metadata:
        request.metadata.update(metadata)
    if return_immediately:
        request.configuration.return_immediately = True
    return request


async def collect(client: Client, request: pb.SendMessageRequest) -> list[pb.StreamResponse]:
    return [event async for event in client.send_message(request)]


async def eventually(
    check: Callable[[], Awaitable[Any]], timeout: float = 15.0, what: str = "condition", poll: float = 0.1
) -> Any:
    """Poll an async check until it returns something truthy (bounded in time); return that value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(poll)
    raise AssertionError(f"{what} not reached within {timeout}s (last: {last!r})")


async def forget_card(mesh: Stack, agent: str) -> None:
    """Clear an agent's retained card, so the registry drops it (and allow the coordinator's 1 s candidate cache)."""
    async with mqtt_client(mesh.tester_settings(), f"cleanup-{uuid.uuid4().hex[:6]}") as client:
        await client.publish(AgentAddress(mesh.org, mesh.unit, agent).discovery_topic, b"", qos=1, retain=True)
    await asyncio.sleep(1.5)
