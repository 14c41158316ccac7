"""Interoperability with the a2a-over-mqtt SDK from PyPI, in both directions, over the mesh's broker. Each SDK
client connects as an outside identity admitted the way `make identity` admits one (devstack.identities.admit),
under its least-privilege role: the SDK requester as a requester, the SDK agent as an agent."""

from __future__ import annotations

import sys
import uuid

import httpx
from a2a.types import a2a_pb2 as pb
from a2a_over_mqtt import A2ARequest, Requester, TopicSpace

from a2amesh.settings import MqttSettings
from devstack.identities import Broker, admit
from devstack.pki import Identity, Role
from devstack.stack import Stack
from tests.conftest import collect, eventually, send_request, user_message
from tests.interop.sdk_config import sdk_config


def outside_identity(mesh: Stack, identity: Identity) -> MqttSettings:
    """Admit `identity` on the mesh's running broker as `make identity` does; its connection settings."""
    return mesh.mqtt_settings(admit(mesh.pki, identity, Broker("127.0.0.1", mesh.ports.mqtt)))


def sdk_requester(mesh: Stack) -> Requester:
    """An SDK requester under a fresh requester identity (the SDK connects as `<org>/<unit>/<name>-<session>`)."""
    name = f"sdk-{uuid.uuid4().hex[:6]}"
    settings = outside_identity(mesh, Identity(name, Role.REQUESTER))
    return Requester(sdk_config(settings), TopicSpace(mesh.org, mesh.unit), requester_id=name, first_reply_timeout=10)


async def test_sdk_requester_gets_a_completed_task_from_our_echo_agent(mesh: Stack) -> None:
    requester = sdk_requester(mesh)
    request = A2ARequest(text="hello from the sdk", request_id="r1")

    replies = [(kind, content) async for kind, content in requester.stream("echo", request.to_json(), "corr-1")]

    assert replies[-1] == ("terminal", "hello from the sdk"), replies


async def test_sdk_requester_retry_with_same_task_id_is_deduplicated(mesh: Stack, http: httpx.AsyncClient) -> None:
    requester = sdk_requester(mesh)
    request = A2ARequest(text="only once", request_id="r2")
    payload = request.to_json()
    first = [reply async for reply in requester.stream("echo", payload, "corr-a")]
    second = [reply async for reply in requester.stream("echo", payload, "corr-b")]  # same Task.id

    assert first[-1] == second[-1] == ("terminal", "only once")

    async def recorded() -> dict | None:
        """The record once it has the task's end (the store writes events as they come: the first may be alone)."""
        response = await http.get(f"{mesh.taskstore_url}/tasks/{request.task_id}/events?scope=all")
        if response.status_code != 200:
            return None
        record = response.json()
        return record if record["statusHistory"][-1]["state"] == "TASK_STATE_COMPLETED" else None

    record = await eventually(recorded, what="task recorded to its end")
    assert [s["state"] for s in record["statusHistory"]].count("TASK_STATE_COMPLETED") == 1


async def test_sdk_responder_agent_joins_the_registry_and_serves_a_task_through_the_coordinator(
    mesh: Stack, make_client, http: httpx.AsyncClient
) -> None:
    agent_id = f"shouter-{uuid.uuid4().hex[:6]}"
    outside_identity(mesh, Identity(agent_id, Role.AGENT))
    process = mesh.command(
        agent_id,
        [sys.executable, "-m", "tests.interop.sdk_agent"],
        {"MESH_AGENT_ID": agent_id},
        mesh.agent_online(agent_id),
        Identity(agent_id, Role.AGENT),
    )
    mesh.launch(process)
    try:
        record = (await http.get(f"{mesh.registry_url}/agents/{mesh.org}/{mesh.unit}/{agent_id}")).json()
        assert record["status"] == "online" and record["skills"] == ["shout"]

        request = send_request(user_message("quiet words"), agent=agent_id)
        [event] = await collect(make_client(), request)
        task = event.task
        assert task.status.state == pb.TASK_STATE_COMPLETED
        assert task.artifacts[-1].parts[0].text == "QUIET WORDS"

        streamed = await collect(make_client(streaming=True), send_request(user_message("louder"), skill="shout"))
        assert streamed[0].HasField("task")
        assert streamed[-1].status_update.status.state == pb.TASK_STATE_COMPLETED

        async def recorded() -> dict | None:
            response = await http.get(f"{mesh.taskstore_url}/tasks/{task.id}/events?scope=all")
            body = response.json() if response.status_code == 200 else None
            done = body and body["statusHistory"][-1]["state"] == "TASK_STATE_COMPLETED"
            return body if done else None

        record = await eventually(recorded, what="the coordinator's record of a task run by an SDK agent")
        assert record["agent"] == f"{mesh.org}/{mesh.unit}/{agent_id}"
    finally:
        process.stop()
