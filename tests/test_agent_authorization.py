"""Per-request authorization on MQTT (User Property a2a-authorization): honoured by an agent that declares it,
never echoed in replies or events. The coordinator hands such an agent a token it minted for that agent's request
topic and the caller (never the caller's key); the agent verifies it against the coordinator's JWKS and refuses one
minted for another agent, an expired one, or one signed by another key."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from collections.abc import Iterator

import aiomqtt
import jwt
import pytest
from a2a.types import a2a_pb2 as pb

from a2amesh.mqtt import Envelope, make_client, publish_properties
from a2amesh.mqtt_base import AUTHORIZATION_PROPERTY
from a2amesh.topics import AgentAddress, new_reply_suffix
from devstack.pki import Identity, Role
from devstack.stack import Stack
from mesh_coordinator.agent_tokens import AgentTokens
from mesh_coordinator.auth import Principal
from mesh_coordinator.cards import Ed25519Signer
from tests.conftest import collect, forget_card, send_request, user_message
from tests.guarded_agent import GUARDED_SKILL

GUARDED = f"echo-guarded-{uuid.uuid4().hex[:6]}"
STATIC_TOKEN = uuid.uuid4().hex + uuid.uuid4().hex
ALICE = Principal("key:alice", frozenset({"send", "read"}), "t1")


def guarded_env(mesh: Stack) -> dict[str, str]:
    """An agent that takes the coordinator's tokens for itself (and, for direct MQTT tests, one static token)."""
    return {
        "MESH_AUTH_TOKENS": json.dumps([STATIC_TOKEN]),
        "MESH_AUTH_JWKS_URL": f"{mesh.coordinator_url}/.well-known/jwks.json",
        "MESH_AUTH_ISSUER": mesh.coordinator_url,
    }


@pytest.fixture(scope="module")
def guarded_agent(mesh: Stack) -> Iterator[str]:
    """An echo agent that accepts only requests carrying a token for it as a2a-authorization. It offers the
    `echo` skill too, so it leaves the shared mesh afterwards: routing by skill must not find it later."""
    process = mesh.launch(mesh.agent(GUARDED, "agent_echo", **guarded_env(mesh)))
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
    assert card["securitySchemes"]["bearer"]["httpAuthSecurityScheme"]["bearerFormat"] == "JWT"
    assert card["securityRequirements"] == [{"schemes": {"bearer": {"list": []}}}]  # no scopes needed


async def test_requests_without_or_with_a_wrong_token_are_refused_without_detail(
    mesh: Stack, guarded_agent: str
) -> None:
    for authorization, reason in (
        (None, "authorization required"),
        ("Bearer nope", "authorization refused"),
        ("Bearer not.a.jwt", "authorization refused"),
        ("Basic abc", "authorization required"),
    ):
        [reply] = await ask(mesh, guarded_agent, authorization)
        error = json.loads(reply.payload)["error"]
        assert error["code"] == -32600 and error["message"] == reason


async def test_a_valid_token_is_honoured_and_never_echoed(mesh: Stack, guarded_agent: str) -> None:
    agent = AgentAddress(mesh.org, mesh.unit, guarded_agent)
    async with make_client(mesh.tester_settings(), f"watch-{uuid.uuid4().hex[:6]}") as watcher:
        await watcher.subscribe(agent.event_topic, qos=1)
        replies = await ask(mesh, guarded_agent, f"Bearer {STATIC_TOKEN}")
        events = await drain(watcher, seconds=1.0)
    final = json.loads(replies[-1].payload)["result"]["statusUpdate"]["status"]["state"]
    assert final == "TASK_STATE_COMPLETED"
    assert len(events) >= 4
    for envelope in (*replies, *events):
        assert AUTHORIZATION_PROPERTY not in envelope.user_properties
        assert STATIC_TOKEN.encode() not in envelope.payload


async def test_the_coordinator_hands_a_token_minted_for_the_agent_only_to_agents_that_ask_for_one(
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
    guarded_topic = AgentAddress(mesh.org, mesh.unit, guarded_agent).request_topic
    presented = by_topic[guarded_topic].user_properties[AUTHORIZATION_PROPERTY]
    assert mesh.api_key not in presented  # the caller's key never reaches the agent
    claims = jwt.decode(presented.removeprefix("Bearer "), options={"verify_signature": False})
    assert claims["aud"] == guarded_topic and claims["iss"] == mesh.coordinator_url
    assert claims["exp"] - claims["iat"] <= 300 and claims["sub"].startswith("key:")
    assert AUTHORIZATION_PROPERTY not in by_topic[plain.request_topic].user_properties


async def test_tokens_for_another_agent_expired_or_signed_by_another_key_are_refused(
    mesh: Stack, guarded_agent: str
) -> None:
    own_topic = AgentAddress(mesh.org, mesh.unit, guarded_agent).request_topic
    coordinator = AgentTokens(mesh.pki.card_signing_key(), mesh.coordinator_url)
    stranger = AgentTokens(None, mesh.coordinator_url)
    stranger.use(Ed25519Signer(os.urandom(32)), kid=coordinator.kid)  # another key under the coordinator's kid
    expired = coordinator.bearer(own_topic, ALICE, seconds=-120)
    for what, authorization in (
        ("for another agent", coordinator.bearer(AgentAddress(mesh.org, mesh.unit, "echo").request_topic, ALICE)),
        ("from another issuer", AgentTokens(mesh.pki.card_signing_key(), "http://elsewhere").bearer(own_topic, ALICE)),
        ("expired", expired),
        ("signed by another key", stranger.bearer(own_topic, ALICE)),
        ("the caller's API key", f"Bearer {mesh.api_key}"),
    ):
        [reply] = await ask(mesh, guarded_agent, authorization)
        error = json.loads(reply.payload).get("error", {})
        assert error.get("message") == "authorization refused", what
    replies = await ask(mesh, guarded_agent, coordinator.bearer(own_topic, ALICE))  # the control: its own audience
    assert json.loads(replies[-1].payload)["result"]["statusUpdate"]["status"]["state"] == "TASK_STATE_COMPLETED"


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
    authorization gets a token minted for it and the caller who started the workflow, and completes."""
    agent_id = f"guarded-step-{uuid.uuid4().hex[:6]}"
    process = mesh.command(
        agent_id,
        [sys.executable, "-m", "tests.guarded_agent"],
        {"MESH_AGENT_ID": agent_id, "MESH_HTTP_PORT": "0", **guarded_env(mesh)},
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
