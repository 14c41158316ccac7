"""Coordinator replicas (docs/operations.md, "Scale"): each with its own broker identity, any of them answers for
a task another accepted, rate limits shared through Redis, and one replica stopping or dying leaves the tasks the
others relay running. Driven through the official a2a-sdk client, as a load balancer in front of them would."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from a2a.client import A2ACardResolver, Client, ClientConfig, ClientFactory
from a2a.types import a2a_pb2 as pb
from a2a.utils.errors import TaskNotFoundError

from devstack.processes import ManagedProcess, free_port
from devstack.stack import Ports, Stack
from tests.conftest import auth_headers, eventually, send_request, user_message

TERMINAL = {pb.TASK_STATE_COMPLETED, pb.TASK_STATE_CANCELED, pb.TASK_STATE_FAILED}
CALLERS = {"alice": "alice-secret-" + "a" * 32, "bob": "bob-secret-" + "b" * 32}
"""Two callers of one tenant, besides the dev key: each must see only its own tasks, on every replica."""


@pytest.fixture(scope="module")
def replicated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A mesh with two coordinators (coordinator and coordinator-1) sharing Redis for their rate limits."""
    stack = Stack(
        run_dir=tmp_path_factory.mktemp("coordinators"),
        ports=Ports.random(),
        agents={"echo": "agent_echo"},
        coordinators=2,
    )
    stack.pki.api_key()  # the dev key first, then the callers' hashed keys (docs/security.md, the keys file)
    with stack.pki.api_keys_file.open("a") as keys:
        for name, secret in CALLERS.items():
            keys.write(f"{name} sha256:{hashlib.sha256(secret.encode()).hexdigest()} scopes=send,read,cancel\n")
    stack.start()
    yield stack
    stack.stop()


def url_of(process: ManagedProcess) -> str:
    return str(process.env["MESH_PUBLIC_URL"])


@contextlib.asynccontextmanager
async def clients(
    stack: Stack, *urls: str, streaming: bool = False, key: str | None = None
) -> AsyncIterator[list[Client]]:
    """One a2a-sdk client per coordinator URL, each from that replica's own card (as the dev key, or `key`)."""
    headers = {"Authorization": f"Bearer {key}"} if key else auth_headers(stack)
    async with httpx.AsyncClient(timeout=60, headers=headers) as http:
        made = []
        for url in urls:
            card = await A2ACardResolver(http, url).get_agent_card()
            made.append(ClientFactory(ClientConfig(httpx_client=http, streaming=streaming)).create(card))
        yield made


async def send_immediately(client: Client, text: str, delay_ms: int) -> pb.Task:
    request = send_request(user_message(text), skill="echo", return_immediately=True, delayMs=delay_ms)
    async for event in client.send_message(request):  # a streaming client's first event is the task too
        return event.task
    raise AssertionError("no task came back")


async def final_state(client: Client, task_id: str) -> pb.Task | None:
    task = await client.get_task(pb.GetTaskRequest(id=task_id))
    return task if task.status.state in TERMINAL else None


async def test_each_replica_has_its_own_identity_and_hosted_workflows_agent(replicated: Stack) -> None:
    """Two replicas under one identity would take each other's broker connection over; each registers its own
    workflows agent, so the workflow skill outlives either replica."""
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.get(f"{replicated.registry_url}/agents")
        names = {record["agentId"] for record in response.json()["agents"] if record["status"] == "online"}
    assert {"workflows", "workflows-1"} <= names
    for name in ("coordinator", "coordinator-1"):
        log = (replicated.run_dir / "logs" / f"{name}.log").read_text()
        assert f"connected as {replicated.org}/{replicated.unit}/{name};" in log
        assert "mqtt connection of" not in log  # never kicked off by a twin


async def test_round_robin_any_replica_answers_for_another_replicas_tasks(replicated: Stack) -> None:
    urls = [url_of(replicated["coordinator"]), url_of(replicated["coordinator-1"])]
    async with clients(replicated, *urls) as (first, second):
        pair = (first, second)
        sent = [await send_immediately(pair[i % 2], f"round {i}", 300) for i in range(6)]
        for i, task in enumerate(sent):
            other = pair[(i + 1) % 2]  # read on the replica that did not accept it
            done = await eventually(lambda t=task, c=other: final_state(c, t.id), timeout=30, what="task done")
            assert done.status.state == pb.TASK_STATE_COMPLETED
            assert done.artifacts[0].parts[0].text == f"round {i}"
        for client in pair:  # each replica lists every task, whichever replica accepted it
            listed = await client.list_tasks(pb.ListTasksRequest(page_size=100))
            assert {task.id for task in sent} <= {task.id for task in listed.tasks}


async def test_subscribe_and_cancel_on_the_replica_that_did_not_accept_the_task(replicated: Stack) -> None:
    urls = [url_of(replicated["coordinator"]), url_of(replicated["coordinator-1"])]
    async with clients(replicated, *urls, streaming=True) as (first, second):
        followed = await send_immediately(first, "followed elsewhere", 3_000)
        states = []
        async for event in second.subscribe(pb.SubscribeToTaskRequest(id=followed.id)):
            if event.HasField("status_update"):
                states.append(event.status_update.status.state)
            if event.HasField("task"):
                states.append(event.task.status.state)
        assert states[-1] == pb.TASK_STATE_COMPLETED, states

        canceled_elsewhere = await send_immediately(first, "canceled elsewhere", 20_000)
        canceled = await second.cancel_task(pb.CancelTaskRequest(id=canceled_elsewhere.id))
        assert canceled.status.state == pb.TASK_STATE_CANCELED
        stored = await eventually(lambda: final_state(first, canceled_elsewhere.id), what="cancel recorded")
        assert stored.status.state == pb.TASK_STATE_CANCELED


async def test_owners_are_scoped_on_every_replica(replicated: Stack) -> None:
    """Alice's task, accepted by one replica, is hers on the other too: Bob is told it does not exist there, by every
    method, and does not see it listed."""
    urls = [url_of(replicated["coordinator"]), url_of(replicated["coordinator-1"])]
    async with (
        clients(replicated, urls[0], key=CALLERS["alice"]) as (alice,),
        clients(replicated, urls[1], key=CALLERS["alice"]) as (alice_elsewhere,),
        clients(replicated, urls[1], key=CALLERS["bob"], streaming=True) as (bob,),
    ):
        task = await send_immediately(alice, "alice's", 5_000)
        assert (await alice_elsewhere.get_task(pb.GetTaskRequest(id=task.id))).id == task.id
        with pytest.raises(TaskNotFoundError):
            await bob.get_task(pb.GetTaskRequest(id=task.id))
        with pytest.raises(TaskNotFoundError):
            await bob.cancel_task(pb.CancelTaskRequest(id=task.id))
        with pytest.raises(TaskNotFoundError):
            async for _ in bob.subscribe(pb.SubscribeToTaskRequest(id=task.id)):
                pass
        listed = await bob.list_tasks(pb.ListTasksRequest(page_size=100))
        assert task.id not in {t.id for t in listed.tasks}
        done = await eventually(lambda: final_state(alice_elsewhere, task.id), timeout=30, what="alice's task done")
        assert done.status.state == pb.TASK_STATE_COMPLETED  # Bob's cancel did not reach it


async def stream_to_the_end(client: Client, text: str, delay_ms: int, ids: list[str] | None = None) -> pb.TaskState:
    """Send streaming and follow the task to its last event; its last state (its id goes into `ids`)."""
    state = pb.TASK_STATE_UNSPECIFIED
    request = send_request(user_message(text), skill="echo", delayMs=delay_ms)
    async for event in client.send_message(request):
        if event.HasField("task"):
            state = event.task.status.state
            if ids is not None:
                ids.append(event.task.id)
        elif event.HasField("status_update"):
            state = event.status_update.status.state
    return state


@pytest.mark.parametrize("ending", ["SIGKILL", "SIGTERM"])
async def test_a_replica_ending_mid_stream_leaves_the_others_tasks_running(replicated: Stack, ending: str) -> None:
    """A third replica relays some tasks and ends mid-stream; the tasks the first relays finish on their streams,
    and the ending replica's own tasks still finish at the agent (readable on the survivor)."""
    ordinal = 2 if ending == "SIGKILL" else 3
    doomed = replicated.launch(replicated.coordinator_replica(ordinal, free_port(), free_port()))
    async with clients(replicated, replicated.coordinator_url, url_of(doomed), streaming=True) as (survivor, dying):
        kept = [asyncio.create_task(stream_to_the_end(survivor, f"kept {i}", 2_500)) for i in range(4)]
        orphans: list[str] = []
        lost = [asyncio.create_task(stream_to_the_end(dying, f"orphan {i}", 2_500, orphans)) for i in range(4)]
        await eventually(lambda: asyncio.sleep(0, len(orphans) == 4), what="every orphan accepted")
        if ending == "SIGKILL":
            doomed.kill()
        else:
            doomed.stop()
        assert await asyncio.gather(*kept) == [pb.TASK_STATE_COMPLETED] * 4
        await asyncio.gather(*lost, return_exceptions=True)  # their HTTP streams may break with their replica
    async with clients(replicated, replicated.coordinator_url) as (reader,):
        for task_id in orphans:
            done = await eventually(lambda t=task_id: final_state(reader, t), timeout=30, what="orphan finished")
            assert done.status.state == pb.TASK_STATE_COMPLETED


async def test_rate_limits_hold_across_replicas(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Three requests in a burst, whichever replica they reach: the fourth is refused on either. Without Redis, each
    replica serves on with buckets of its own rather than failing every call."""
    stack = Stack(
        run_dir=tmp_path_factory.mktemp("limits"),
        ports=Ports.random(),
        agents={},
        coordinators=2,
        extra_env={"MESH_RATE_LIMIT": "0.01", "MESH_RATE_BURST": "3"},
    )
    await asyncio.to_thread(stack.start)
    try:
        urls = [url_of(stack["coordinator"]), url_of(stack["coordinator-1"])]
        headers = {**auth_headers(stack), "A2A-Version": "1.0"}
        async with httpx.AsyncClient(timeout=10, headers=headers) as http:
            codes = [(await http.get(f"{urls[i % 2]}/tasks")).status_code for i in range(3)]
            assert codes == [200, 200, 200]
            refused = [await http.get(f"{url}/tasks") for url in urls]
        assert [response.status_code for response in refused] == [429, 429]
        assert all(int(response.headers["retry-after"]) >= 1 for response in refused)
        await asyncio.to_thread(stack["redis"].kill)
        async with httpx.AsyncClient(timeout=10, headers=headers) as http:
            alone = [(await http.get(f"{url}/tasks")).status_code for url in urls]
        assert alone == [200, 200]  # each replica's own (fresh) bucket admits it
    finally:
        await asyncio.to_thread(stack.stop)
