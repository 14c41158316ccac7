"""Replicas of one agent share its load through a pool on Mosquitto (the project's extension to the profile)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
from a2a.client import A2ACardResolver, ClientConfig, ClientFactory
from a2a.types import a2a_pb2 as pb

from devstack.stack import Ports, Stack
from tests.conftest import auth_headers, collect, eventually, send_request, user_message

REPLICAS = ("echo-r1", "echo-r2", "echo-r3")
POOL = "echo-pool"
REVIEWERS = ("reviewer-r1", "reviewer-r2", "reviewer-r3")
REPORT = "# MQTT\n\n## Summary\n\nRetained messages keep the last value [1].\n\n## Sources\n\n1. Retained (`r`)\n"
TASKS = 24


@pytest.fixture(scope="module")
def pooled_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A mesh whose only echo agents are three replicas in one pool."""
    stack = Stack(run_dir=tmp_path_factory.mktemp("pooled"), ports=Ports.random(), agents={})
    stack.start()
    for replica in REPLICAS:
        stack.launch(stack.agent(replica, "agent_echo", MESH_POOL=POOL))
    for replica in REVIEWERS:
        stack.launch(stack.agent(replica, "agent_reviewer", MESH_POOL="reviewer-pool"))
    yield stack
    stack.stop()


async def test_three_replicas_all_do_work_and_each_task_is_recorded_once(pooled_mesh: Stack) -> None:
    async with httpx.AsyncClient(timeout=60, headers=auth_headers(pooled_mesh)) as http:
        card = await A2ACardResolver(http, pooled_mesh.coordinator_url).get_agent_card()
        client = ClientFactory(ClientConfig(httpx_client=http, streaming=False)).create(card)

        async def one(index: int) -> pb.Task:
            [event] = await collect(client, send_request(user_message(f"job {index}"), skill="echo", delayMs=100))
            return event.task

        tasks = await asyncio.gather(*(one(index) for index in range(TASKS)))
        assert all(task.status.state == pb.TASK_STATE_COMPLETED for task in tasks)
        assert sorted(task.artifacts[0].parts[0].text for task in tasks) == sorted(f"job {i}" for i in range(TASKS))

        async def holders() -> list[str] | None:
            agents = []
            for task in tasks:
                response = await http.get(f"{pooled_mesh.taskstore_url}/tasks/{task.id}/events?scope=all")
                if response.status_code != 200:
                    return None
                body = response.json()
                if body["statusHistory"][-1]["state"] != "TASK_STATE_COMPLETED":
                    return None
                agents.append(body["agent"])
            return agents

        per_replica = Counter(await eventually(holders, what="every task recorded"))
        print(f"\ntasks per replica: {dict(per_replica)}")
        assert set(per_replica) == {f"{pooled_mesh.org}/{pooled_mesh.unit}/{replica}" for replica in REPLICAS}
        assert sum(per_replica.values()) == TASKS


async def test_cancel_reaches_the_pool_member_holding_the_task(pooled_mesh: Stack) -> None:
    async with httpx.AsyncClient(timeout=60, headers=auth_headers(pooled_mesh)) as http:
        card = await A2ACardResolver(http, pooled_mesh.coordinator_url).get_agent_card()
        client = ClientFactory(ClientConfig(httpx_client=http, streaming=False)).create(card)
        request = send_request(user_message("long"), skill="echo", return_immediately=True, delayMs=20_000)
        [event] = await collect(client, request)
        canceled = await client.cancel_task(pb.CancelTaskRequest(id=event.task.id))
        assert canceled.status.state == pb.TASK_STATE_CANCELED


async def test_a_follow_up_reaches_the_pool_member_that_holds_the_task(pooled_mesh: Stack) -> None:
    """The reviewer asks for the audience; the answer must reach the replica that asked, whichever the pool chose.
    A replica that does not hold the task would see only the answer, take it for a report, and ask again."""
    async with httpx.AsyncClient(timeout=60, headers=auth_headers(pooled_mesh)) as http:
        card = await A2ACardResolver(http, pooled_mesh.coordinator_url).get_agent_card()
        client = ClientFactory(ClientConfig(httpx_client=http, streaming=False)).create(card)
        for _ in range(3):  # a few tasks, so more than one replica is likely to hold one
            [asked] = await collect(client, send_request(user_message(REPORT), skill="review-report"))
            assert asked.task.status.state == pb.TASK_STATE_INPUT_REQUIRED
            answer = user_message("general", task_id=asked.task.id, context_id=asked.task.context_id)
            [done] = await collect(client, send_request(answer))
            assert done.task.status.state == pb.TASK_STATE_COMPLETED, done.task.status
            assert [m.role for m in done.task.history].count(pb.ROLE_USER) == 2

            async def recorded(task_id: str = done.task.id) -> dict | None:
                response = await http.get(f"{pooled_mesh.taskstore_url}/tasks/{task_id}/events?scope=all")
                body = response.json() if response.status_code == 200 else None
                return body if body and body["statusHistory"][-1]["state"] == "TASK_STATE_COMPLETED" else None

            record = await eventually(recorded, what="the multi-turn task recorded")
            assert record["agent"] in {f"{pooled_mesh.org}/{pooled_mesh.unit}/{name}" for name in REVIEWERS}
