"""Per-request authorization on MQTT (User Property a2a-authorization): honoured by an agent that declares it,
passed on by the coordinator only to such agents, and never echoed in replies or events."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import Iterator

import aiomqtt
import pytest
from a2a.types import a2a_pb2 as pb

from a2amesh.mqtt import AUTHORIZATION_PROPERTY, Envelope, make_client, publish_properties
from a2amesh.topics import AgentAddress, new_reply_suffix
from devstack.pki import Identity, Role
from devstack.stack import Stack
from tests.conftest import collect, forget_card, send_request, user_message
from tests.guarded_agent import GUARDED_SKILL

GUARDED = f"echo-guarded-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def guarded_agent(mesh: Stack) -> Iterator[str]:
    """An echo agent that accepts only requests carrying the mesh's API key as a2a-authorization. It offers the
    `echo` skill too, so it leaves the shared mesh afterwards: routing by skill must not find it later."""
    process = mesh.launch(mesh.agent(GUARDED, "agent_echo", MESH_AUTH_TOKENS=json.dumps([mesh.api_key])))
    yield GUARDED
    process.stop()
    asyncio.run(forget_card(mesh, GUARDED))


async def ask(mesh: Stack, agent: str, authorization: str | None) -> list[Envelope]:
    """One SendStreamingMessage over raw MQTT; every reply envelope until the stream ends (bounded)."""
    inbox = AgentAddress(mesh.org, mesh.unit, "tester").reply_topic(new_reply_suffix())
    message = {
        "messageId": uuid.uuid4().hex,
        "role": "ROLE_USER",
        "parts": [{"text": "hi"}],
        "taskId": str(uuid.uuid4()),
    }
    request = {"jsonrpc": "2.0", "id": 7, "method": "SendStreamingMessage", "params": {"message": message}}
    user = [(AUTHORIZATION_PROPERTY, authorization)] if authorization else []
    replies: list[Envelope] = []
    async with make_client(mesh.tester_settings(), f"tester-{uuid.uuid4().hex[:6]}") as client:
        await client.subscribe(inbox, qos=1)
        properties = publish_properties(response_topic=inbox, correlation_data=b"c-1", user=user)
        await client.publish(
            AgentAddress(mesh.org, mesh.unit, agent).request_topic, json.dumps(request), qos=1, properties=properties
        )
        async with asyncio.timeout(15):
            async for raw in client.messages:
                envelope = Envelope.of(raw)
                replies.append(envelope)
                body = json.loads(envelope.payload)
                state = (body.get("result") or {}).get("statusUpdate", {}).get("status", {}).get("state")
                if "error" in body or state == "TASK_STATE_COMPLETED":
                    return replies
    return replies


async def test_the_card_declares_bearer_authorization(mesh: Stack, guarded_agent: str, http) -> None:
    record = (await http.get(f"{mesh.registry_url}/agents/{mesh.org}/{mesh.unit}/{guarded_agent}")).json()
    card = record["card"]
    assert card["securitySchemes"]["bearer"]["httpAuthSecurityScheme"]["scheme"] == "Bearer"
    assert card["securityRequirements"] == [{"schemes": {"bearer": {"list": []}}}]  # no scopes needed


async def test_requests_without_or_with_a_wrong_token_are_refused_without_detail(
    mesh: Stack, guarded_agent: str
) -> None:
    for authorization, reason in (
        (None, "authorization required"),
        ("Bearer nope", "authorization refused"),
        ("Basic abc", "authorization required"),
    ):
        [reply] = await ask(mesh, guarded_agent, authorization)
        error = json.loads(reply.payload)["error"]
        assert error["code"] == -32600 and error["message"] == reason


async def test_a_valid_token_is_honoured_and_never_echoed(mesh: Stack, guarded_agent: str) -> None:
    agent = AgentAddress(mesh.org, mesh.unit, guarded_agent)
    async with make_client(mesh.tester_settings(), f"watch-{uuid.uuid4().hex[:6]}") as watcher:
        await watcher.subscribe(agent.event_topic, qos=1)
        replies = await ask(mesh, guarded_agent, f"Bearer {mesh.api_key}")
        events = await drain(watcher, seconds=1.0)
    final = json.loads(replies[-1].payload)["result"]["statusUpdate"]["status"]["state"]
    assert final == "TASK_STATE_COMPLETED"
    assert len(events) >= 4
    for envelope in (*replies, *events):
        assert AUTHORIZATION_PROPERTY not in envelope.user_properties
        assert mesh.api_key.encode() not in envelope.payload


async def test_the_coordinator_passes_the_callers_key_only_to_agents_that_ask_for_it(
    mesh: Stack, guarded_agent: str, make_client
) -> None:
    plain = AgentAddress(mesh.org, mesh.unit, "echo")
    async with make_client_for(mesh) as watcher:
        await watcher.subscribe(AgentAddress(mesh.org, mesh.unit, guarded_agent).request_topic, qos=1)
        await watcher.subscribe(plain.request_topic, qos=1)
        [guarded] = await collect(make_client(), send_request(user_message("to guarded"), agent=guarded_agent))
        [unguarded] = await collect(make_client(), send_request(user_message("to plain"), agent="echo"))
        requests = await drain(watcher, seconds=1.0)
    assert guarded.task.status.state == unguarded.task.status.state == pb.TASK_STATE_COMPLETED
    by_topic = {envelope.topic: envelope for envelope in requests}
    seen = by_topic[AgentAddress(mesh.org, mesh.unit, guarded_agent).request_topic]
    assert seen.user_properties.get(AUTHORIZATION_PROPERTY) == f"Bearer {mesh.api_key}"
    assert AUTHORIZATION_PROPERTY not in by_topic[plain.request_topic].user_properties


def make_client_for(mesh: Stack) -> aiomqtt.Client:
    return make_client(mesh.tester_settings(), f"watch-{uuid.uuid4().hex[:6]}")


async def drain(client: aiomqtt.Client, seconds: float) -> list[Envelope]:
    """Every message that arrives within `seconds`."""
    received: list[Envelope] = []
    try:
        async with asyncio.timeout(seconds):
            async for raw in client.messages:
                received.append(Envelope.of(raw))
    except TimeoutError:
        pass
    return received


async def test_a_workflow_step_to_an_agent_that_asks_for_authorization_carries_the_callers_key(
    mesh: Stack, make_client
) -> None:
    """The workflows' steps route like the HTTP face, credentials included: a step to an agent whose card asks for
    authorization gets the key of the caller who started the workflow, and completes."""
    agent_id = f"guarded-step-{uuid.uuid4().hex[:6]}"
    process = mesh.command(
        agent_id,
        [sys.executable, "-m", "tests.guarded_agent"],
        {"MESH_AGENT_ID": agent_id, "MESH_AUTH_TOKENS": json.dumps([mesh.api_key]), "MESH_HTTP_PORT": "0"},
        mesh.agent_online(agent_id),
        Identity(agent_id, Role.AGENT),
    )
    mesh.launch(process)
    try:
        request = send_request(
            user_message("first\nsecond"), skill="workflow.fanout", stepSkill=GUARDED_SKILL, stepMetadata={}
        )
        [event] = await collect(make_client(), request)
        task = event.task
        reason = " ".join(part.text for part in task.status.message.parts)
        assert task.status.state == pb.TASK_STATE_COMPLETED, reason
    finally:
        process.stop()
        await forget_card(mesh, agent_id)
