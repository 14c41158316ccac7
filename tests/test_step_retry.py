"""A workflow step whose agent stops answering is retried on another instance with the same task id."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import httpx
import pytest
from a2a.client import A2ACardResolver, ClientConfig, ClientFactory
from a2a.types import a2a_pb2 as pb

from devstack.stack import Ports, Stack
from tests.conftest import auth_headers, collect, eventually, send_request, user_message


@pytest.fixture(scope="module")
def two_echoes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A mesh with two interchangeable echo agents and a coordinator that gives up on an agent within seconds."""
    quick = {"MESH_FIRST_REPLY_TIMEOUT": "1.5", "MESH_STREAM_IDLE_TIMEOUT": "5", "MESH_REQUEST_ATTEMPTS": "1"}
    stack = Stack(run_dir=tmp_path_factory.mktemp("retry"), ports=Ports.random(), agents={}, extra_env=quick)
    stack.start()
    for name in ("echo-a", "echo-b"):
        stack.launch(stack.agent(name, "agent_echo"))
    yield stack
    stack.stop()


async def test_a_frozen_agents_step_completes_on_the_other_instance_under_the_same_task_id(two_echoes: Stack) -> None:
    frozen = two_echoes["echo-a"]  # registered online and first in order, but it will never answer
    frozen.signal(signal.SIGSTOP)
    try:
        async with httpx.AsyncClient(timeout=60, headers=auth_headers(two_echoes)) as http:
            card = await A2ACardResolver(http, two_echoes.coordinator_url).get_agent_card()
            client = ClientFactory(ClientConfig(httpx_client=http, streaming=False)).create(card)
            request = send_request(user_message("only step"), skill="workflow.fanout", stepSkill="echo")
            [event] = await collect(client, request)
            assert event.task.status.state == pb.TASK_STATE_COMPLETED, event.task.status

            async def child_record() -> dict | None:
                page = (
                    await http.get(
                        f"{two_echoes.taskstore_url}/tasks", params={"scope": "all", "contextId": event.task.context_id}
                    )
                ).json()
                child = next((t for t in page["tasks"] if t["id"] != event.task.id), None)
                if child is None or child["status"]["state"] != "TASK_STATE_COMPLETED":
                    return None
                return (await http.get(f"{two_echoes.taskstore_url}/tasks/{child['id']}/events?scope=all")).json()

            record = await eventually(child_record, what="the child recorded COMPLETED")
            assert record["agent"] == f"{two_echoes.org}/{two_echoes.unit}/echo-b"
    finally:
        frozen.kill()
