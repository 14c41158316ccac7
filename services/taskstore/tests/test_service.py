"""The task store as a real process beside the session's broker: events published over MQTT 5 the way an agent
publishes them, the record read back over HTTP with bounded polling."""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import aiomqtt
import httpx
import pytest

from a2amesh.models import (
    Artifact,
    Message,
    Part,
    Role,
    StreamResponse,
    Task,
    TaskArtifactUpdateEvent,
    TaskOwnerRecord,
    TaskOwnerRecords,
    TaskState,
    TaskStatus,
    TaskStatusUpdateEvent,
)
from a2amesh.mqtt import EVENT_ID_PROPERTY, make_client, publish_properties
from a2amesh.topics import AgentAddress
from devstack.fixtures import BrokerHandle
from devstack.processes import free_port
from devstack.stack import Ports, Stack

AGENT = AgentAddress("acme", "default", "agent-x")
T = TypeVar("T")


def new_id(prefix: str = "") -> str:
    """A unique id: the broker is shared by the whole session, so nothing may collide across tests."""
    return f"{prefix}{uuid.uuid4()}"


def taskstore_stack(broker: BrokerHandle, run_dir: Path) -> Stack:
    """A stack holding just a task store on the session broker. Each gets its own org, hence its own MQTT client
    id (`{org}/default/taskstore`), so two of them never take each other's session over."""
    ports = Ports(mqtt=broker.port, redis=0, registry=0, taskstore=free_port(), coordinator=0)
    database_url = os.environ.get("MESH_TEST_DATABASE_URL")  # opt-in: run against e.g. a local PostgreSQL
    return Stack(
        run_dir=run_dir,
        ports=ports,
        org=f"ts-{uuid.uuid4().hex[:12]}",
        database_url=database_url,
        broker_of=broker.stack,
    )


@pytest.fixture(scope="module")
def store_stack(broker: BrokerHandle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A task store process shared by the tests of one module (each test uses its own task ids)."""
    stack = taskstore_stack(broker, tmp_path_factory.mktemp("taskstore"))
    stack.launch(stack.taskstore())
    yield stack
    codes = stack.stop()
    assert codes["taskstore"] == 0, stack["taskstore"].log_tail()


class Agent:
    """Publishes task events the way an agent does: QoS 1 on its event topic, with an event id."""

    def __init__(self, client: aiomqtt.Client, address: AgentAddress = AGENT) -> None:
        self.client = client
        self.address = address

    async def publish(
        self, event: StreamResponse | bytes | str, event_id: str | None = None, *, topic: str | None = None
    ) -> str:
        """Publish one event (a model, or raw bytes for malformed cases); returns the event id it carried."""
        payload = event.to_json() if isinstance(event, StreamResponse) else event
        event_id = new_id("ev-") if event_id is None else event_id
        user = [(EVENT_ID_PROPERTY, event_id)] if event_id else []
        await self.client.publish(
            topic or self.address.event_topic, payload, qos=1, properties=publish_properties(user=user)
        )
        return event_id


@pytest.fixture(scope="module")
async def mqtt_client(broker: BrokerHandle) -> AsyncIterator[aiomqtt.Client]:
    client = make_client(broker.settings, new_id("test-agent-"))
    async with client:
        yield client


@pytest.fixture
def agent(mqtt_client: aiomqtt.Client) -> Agent:
    return Agent(mqtt_client)


async def eventually(probe: Callable[[], Awaitable[T | None]], within: float = 10.0, what: str = "condition") -> T:
    """Poll `probe` until it returns something other than None/False (bounded in time)."""
    deadline = time.monotonic() + within
    last: Any = None
    while time.monotonic() < deadline:
        last = await probe()
        if last is not None and last is not False:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"{what} not met within {within}s (last: {last!r})")


class StoreClient:
    """The task store's HTTP API, with waits for events to land."""

    def __init__(self, base_url: str) -> None:
        self.http = httpx.AsyncClient(base_url=base_url, timeout=5.0)

    async def task(self, task_id: str, **params: Any) -> httpx.Response:
        return await self.http.get(f"/tasks/{task_id}", params={"scope": "all", **(params or {})})

    async def events(self, task_id: str) -> httpx.Response:
        return await self.http.get(f"/tasks/{task_id}/events", params={"scope": "all"})

    async def list(self, **params: Any) -> httpx.Response:
        return await self.http.get("/tasks", params={"scope": "all", **(params or {})})

    async def wait_events(self, task_id: str, count: int, within: float = 10.0) -> dict[str, Any]:
        """The task's event log once it holds at least `count` events."""

        async def probe() -> dict[str, Any] | None:
            response = await self.events(task_id)
            if response.status_code == 200 and len(response.json()["events"]) >= count:
                return response.json()
            return None

        return await eventually(probe, within, f"{count} events for {task_id}")

    async def aclose(self) -> None:
        await self.http.aclose()


@pytest.fixture
async def api(store_stack: Stack) -> AsyncIterator[StoreClient]:
    client = StoreClient(store_stack.taskstore_url)
    yield client
    await client.aclose()


# -- events ---


def message(text: str, role: Role = Role.AGENT, task_id: str | None = None) -> Message:
    return Message(message_id=new_id("m-"), role=role, task_id=task_id, parts=[Part(text=text)])


def snapshot(task_id: str, context_id: str, state: TaskState = TaskState.SUBMITTED, **fields: Any) -> StreamResponse:
    status = TaskStatus(state=state, timestamp=fields.pop("timestamp", None))
    return StreamResponse(task=Task(id=task_id, context_id=context_id, status=status, **fields))


def status(task_id: str, context_id: str, state: TaskState, msg: Message | None = None) -> StreamResponse:
    update = TaskStatusUpdateEvent(
        task_id=task_id, context_id=context_id, status=TaskStatus(state=state, message=msg, timestamp=datetime.now(UTC))
    )
    return StreamResponse(status_update=update)


def chunk(task_id: str, context_id: str, artifact_id: str, text: str, append: bool, last: bool) -> StreamResponse:
    artifact = Artifact(artifact_id=artifact_id, name="answer", parts=[Part(text=text)])
    update = TaskArtifactUpdateEvent(
        task_id=task_id, context_id=context_id, artifact=artifact, append=append, last_chunk=last
    )
    return StreamResponse(artifact_update=update)


async def test_lifecycle_is_recorded(agent: Agent, api: StoreClient) -> None:
    task_id, context_id = new_id("task-"), new_id("ctx-")
    question = message("what is 6x7?", Role.USER, task_id)
    working, done = message("thinking"), message("done")
    events = [
        snapshot(task_id, context_id, history=[question]),
        status(task_id, context_id, TaskState.WORKING, working),
        chunk(task_id, context_id, "a1", "forty-", append=False, last=False),
        chunk(task_id, context_id, "a1", "two", append=True, last=True),
        status(task_id, context_id, TaskState.COMPLETED, done),
    ]
    ids = [await agent.publish(event) for event in events]

    log = await api.wait_events(task_id, len(events))
    assert log["taskId"] == task_id
    assert log["agent"] == str(AGENT)
    assert [e["eventId"] for e in log["events"]] == ids
    assert [e["kind"] for e in log["events"]] == [
        "task",
        "statusUpdate",
        "artifactUpdate",
        "artifactUpdate",
        "statusUpdate",
    ]
    seqs = [e["seq"] for e in log["events"]]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert all(e["applied"] and e["receivedAt"].endswith("Z") for e in log["events"])
    assert log["events"][3]["event"] == events[3].to_wire()
    assert [s["state"] for s in log["statusHistory"]] == [
        "TASK_STATE_SUBMITTED",
        "TASK_STATE_WORKING",
        "TASK_STATE_COMPLETED",
    ]
    assert log["statusHistory"][1]["message"]["messageId"] == working.message_id

    response = await api.task(task_id)
    assert response.status_code == 200
    task = Task.from_wire(response.json())
    assert task.context_id == context_id
    assert task.status.state is TaskState.COMPLETED
    assert task.artifacts is not None and len(task.artifacts) == 1
    assert [part.text for part in task.artifacts[0].parts] == ["forty-", "two"]
    assert [m.message_id for m in task.history or []] == [question.message_id, working.message_id, done.message_id]

    last_one = (await api.task(task_id, historyLength=1)).json()
    assert [m["messageId"] for m in last_one["history"]] == [done.message_id]
    assert "history" not in (await api.task(task_id, historyLength=0)).json()
    assert (await api.task(task_id, historyLength=-1)).status_code == 400


async def test_unknown_task_is_404(api: StoreClient) -> None:
    for response in (await api.task("no-such-task"), await api.events("no-such-task")):
        assert response.status_code == 404
        assert response.json() == {"error": "task not found"}


async def test_redelivered_event_is_stored_once(agent: Agent, api: StoreClient) -> None:
    task_id, context_id = new_id("task-"), new_id("ctx-")
    first = snapshot(task_id, context_id)
    event_id = await agent.publish(first)
    await agent.publish(first, event_id)  # a QoS 1 redelivery: same id, same bytes
    await agent.publish(status(task_id, context_id, TaskState.WORKING), event_id)  # same id, other bytes
    # No event id: the store derives one from topic and payload, so the same bytes twice are one event too.
    anonymous = status(task_id, context_id, TaskState.WORKING, message("no id")).to_json()
    await agent.publish(anonymous, "")
    await agent.publish(anonymous, "")
    marker = await agent.publish(status(task_id, context_id, TaskState.COMPLETED))

    # Events of one topic arrive in order, so once the marker is in, every duplicate has been seen.
    async def marker_in() -> dict[str, Any] | None:
        response = await api.events(task_id)
        if response.status_code != 200 or marker not in [e["eventId"] for e in response.json()["events"]]:
            return None
        return response.json()

    log = await eventually(marker_in, what="the marker event")
    assert [e["eventId"] for e in log["events"]] == [event_id, log["events"][1]["eventId"], marker]
    assert log["events"][1]["eventId"].startswith("sha256:")
    assert [s["state"] for s in log["statusHistory"]] == [
        "TASK_STATE_SUBMITTED",
        "TASK_STATE_WORKING",
        "TASK_STATE_COMPLETED",
    ]
    history = (await api.task(task_id)).json()["history"]
    assert len(history) == 1


async def test_terminal_task_is_not_reopened(agent: Agent, api: StoreClient) -> None:
    task_id, context_id = new_id("task-"), new_id("ctx-")
    await agent.publish(snapshot(task_id, context_id))
    await agent.publish(status(task_id, context_id, TaskState.FAILED, message("boom")))
    reopen = await agent.publish(status(task_id, context_id, TaskState.WORKING, message("back to work?")))
    await agent.publish(snapshot(task_id, context_id, TaskState.SUBMITTED))
    await agent.publish(StreamResponse(message=message("a note after the end", Role.USER, task_id)))

    log = await api.wait_events(task_id, 5)
    assert [(e["kind"], e["applied"]) for e in log["events"]] == [
        ("task", True),
        ("statusUpdate", True),
        ("statusUpdate", False),
        ("task", False),
        ("message", True),
    ]
    assert log["events"][2]["eventId"] == reopen
    assert [s["state"] for s in log["statusHistory"]] == ["TASK_STATE_SUBMITTED", "TASK_STATE_FAILED"]
    task = (await api.task(task_id)).json()
    assert task["status"]["state"] == "TASK_STATE_FAILED"
    assert [m["parts"][0]["text"] for m in task["history"]] == ["boom", "a note after the end"]


async def test_list_filters_and_pages(agent: Agent, api: StoreClient) -> None:
    context_id, other_context = new_id("ctx-"), new_id("ctx-")
    old, recent = datetime(2020, 1, 1, tzinfo=UTC), datetime(2030, 1, 1, tzinfo=UTC)
    published: list[str] = []
    for index in range(7):
        task_id = new_id(f"task-{index}-")
        state = TaskState.COMPLETED if index % 3 == 0 else TaskState.WORKING
        artifacts = [Artifact(artifact_id="a", parts=[Part(text=str(index))])]
        history = [message(f"q{index}", Role.USER, task_id), message(f"a{index}")]
        stamp = recent if index < 2 else old
        await agent.publish(snapshot(task_id, context_id, state, artifacts=artifacts, history=history, timestamp=stamp))
        published.append(task_id)
    await agent.publish(snapshot(new_id("task-other-"), other_context))

    async def listed() -> dict[str, Any] | None:
        body = (await api.list(contextId=context_id)).json()
        return body if body["totalSize"] == 7 else None

    everything = await eventually(listed, what="7 tasks listed")
    assert [t["id"] for t in everything["tasks"]] == list(reversed(published))  # newest first
    assert everything["nextPageToken"] == "" and everything["pageSize"] == 50
    assert all("artifacts" not in t for t in everything["tasks"])

    pages: list[list[str]] = []
    token = ""
    while True:
        response = await api.list(contextId=context_id, pageSize=3, pageToken=token)
        assert response.status_code == 200
        body = response.json()
        assert body["totalSize"] == 7 and body["pageSize"] == 3
        pages.append([t["id"] for t in body["tasks"]])
        token = body["nextPageToken"]
        if not token:
            break
    assert [len(page) for page in pages] == [3, 3, 1]
    assert [task_id for page in pages for task_id in page] == list(reversed(published))

    completed = (await api.list(contextId=context_id, status="TASK_STATE_COMPLETED")).json()
    assert sorted(t["id"] for t in completed["tasks"]) == sorted(published[i] for i in (0, 3, 6))
    assert completed["totalSize"] == 3
    assert all(t["status"]["state"] == "TASK_STATE_COMPLETED" for t in completed["tasks"])

    after = (await api.list(contextId=context_id, statusTimestampAfter="2025-01-01T00:00:00Z")).json()
    assert sorted(t["id"] for t in after["tasks"]) == sorted(published[:2])

    detailed = (await api.list(contextId=context_id, includeArtifacts="true", historyLength=1)).json()
    assert all(len(t["artifacts"]) == 1 and len(t["history"]) == 1 for t in detailed["tasks"])
    assert all(t["history"][0]["role"] == "ROLE_AGENT" for t in detailed["tasks"])
    assert all("history" not in t for t in (await api.list(contextId=context_id, historyLength=0)).json()["tasks"])

    other = (await api.list(contextId=other_context)).json()
    assert other["totalSize"] == 1 and len(other["tasks"]) == 1


@pytest.mark.parametrize(
    "params",
    [
        {"pageSize": "0"},
        {"pageSize": "101"},
        {"pageSize": "ten"},
        {"status": "TASK_STATE_BOGUS"},
        {"pageToken": "not-a-token"},
        {"historyLength": "-1"},
        {"statusTimestampAfter": "yesterday"},
        {"statusTimestampAfter": "0001-01-01T00:00:00+01:00"},  # before year 1 in UTC
        {"pageToken": "eyJ1IjoiMDAwMS0wMS0wMVQwMDowMDowMCswMTowMCIsImkiOiJ0In0"},  # the same time as a cursor
        {"includeArtifacts": "maybe"},
    ],
)
async def test_invalid_list_parameters(api: StoreClient, params: dict[str, str]) -> None:
    response = await api.list(**params)
    assert response.status_code == 400
    assert isinstance(response.json()["error"], str)


async def test_malformed_events_are_dropped(agent: Agent, api: StoreClient, store_stack: Stack) -> None:
    task_id, context_id, stray_id, shapeless_id = new_id("task-"), new_id("ctx-"), new_id("task-"), new_id("task-")
    stray = snapshot(stray_id, context_id)
    two_payloads = {"task": stray.to_wire()["task"], "message": message("x", task_id=stray_id).to_wire()}
    for payload in (
        b"{not json",
        b"",
        b'["a list"]',
        json.dumps({"task": {"id": shapeless_id}}),  # a task without its required status
        json.dumps(two_payloads),  # a StreamResponse carries exactly one payload
        StreamResponse(message=message("a direct message, about no task")).to_json(),
    ):
        await agent.publish(payload)
    for topic in (f"{AGENT.event_topic}/extra", "$a2a/v1/event/acme/default", "$a2a/v1/event/ac me/default/x"):
        await agent.publish(stray, topic=topic)  # outside the topic scheme
    await agent.publish(snapshot(task_id, context_id))  # a good one after the bad ones

    log = await api.wait_events(task_id, 1)
    await asyncio.sleep(0.2)
    assert len(log["events"]) == 1
    for dropped in (stray_id, shapeless_id):
        assert (await api.task(dropped)).status_code == 404
    assert store_stack["taskstore"].running
    health = await api.http.get("/healthz")
    assert health.status_code == 200 and health.json() == {"status": "ok"}


async def publish_owners(client: aiomqtt.Client, topic: str, *owners: tuple[str, str]) -> None:
    """Owner records as a coordinator publishes them: (task id, principal) pairs, tenant t1."""
    records = [TaskOwnerRecord(task_id=task_id, principal=principal, tenant="t1") for task_id, principal in owners]
    await client.publish(topic, TaskOwnerRecords(owners=records).to_json(), qos=1)


async def test_owners_come_over_mqtt_in_either_order_and_scope_reads(
    agent: Agent, api: StoreClient, store_stack: Stack, mqtt_client: aiomqtt.Client
) -> None:
    coordinator = AgentAddress(store_stack.org, store_stack.unit, "coordinator")
    early, late, forged, marker = (new_id("task-") for _ in range(4))
    await publish_owners(mqtt_client, coordinator.owner_topic, (early, "key:alice"))  # before the task's events
    for task_id in (early, late, forged, marker):
        await agent.publish(snapshot(task_id, new_id("ctx-")))
    await api.wait_events(late, 1)
    await publish_owners(mqtt_client, coordinator.owner_topic, (late, "key:alice"), (late, "key:alice"))  # after
    not_a_coordinator = AgentAddress(store_stack.org, store_stack.unit, "agent-x").owner_topic
    await publish_owners(mqtt_client, not_a_coordinator, (forged, "key:mallory"))
    await publish_owners(mqtt_client, coordinator.owner_topic, (late, "key:mallory"))  # a later, different owner
    await mqtt_client.publish(coordinator.owner_topic, b'{"owners": []}', qos=1)  # malformed: dropped
    await publish_owners(mqtt_client, coordinator.owner_topic, (marker, "key:bob"))  # one writer: lands last

    async def scoped(task_id: str, principal: str) -> int:
        response = await api.http.get(f"/tasks/{task_id}", params={"owner": principal, "tenant": "t1"})
        return response.status_code

    await eventually(lambda: _is(scoped(marker, "key:bob"), 200), what="the last owner record landed")
    assert await scoped(early, "key:alice") == 200 and await scoped(late, "key:alice") == 200
    assert await scoped(late, "key:mallory") == 404  # never taken over
    assert await scoped(forged, "key:mallory") == 404  # only a coordinator's topic names owners
    listed = await api.http.get("/tasks", params={"owner": "key:alice", "tenant": "t1"})
    assert {task["id"] for task in listed.json()["tasks"]} == {early, late}
    assert store_stack["taskstore"].running


async def _is(value: Awaitable[T], expected: T) -> bool:
    return await value == expected


async def test_events_published_while_stopped_arrive_after_restart(
    agent: Agent, broker: BrokerHandle, tmp_path: Any
) -> None:
    stack = taskstore_stack(broker, tmp_path)
    process = await asyncio.to_thread(stack.launch, stack.taskstore())
    api = StoreClient(stack.taskstore_url)
    try:
        task_id, context_id = new_id("task-"), new_id("ctx-")
        await agent.publish(snapshot(task_id, context_id, history=[message("go", Role.USER, task_id)]))
        await api.wait_events(task_id, 1)

        assert await asyncio.to_thread(process.stop) == 0  # SIGTERM: a graceful stop exits 0
        with pytest.raises(httpx.TransportError):
            await api.http.get("/healthz")
        await agent.publish(status(task_id, context_id, TaskState.WORKING, message("on it")))
        await agent.publish(chunk(task_id, context_id, "out", "part one, ", append=False, last=False))
        await agent.publish(chunk(task_id, context_id, "out", "part two", append=True, last=True))
        await agent.publish(status(task_id, context_id, TaskState.COMPLETED, message("done")))

        await asyncio.to_thread(process.start)  # same database file, same org, so the same MQTT session
        await asyncio.to_thread(process.wait_ready, 30)
        log = await api.wait_events(task_id, 5, within=15)
        assert [e["kind"] for e in log["events"]] == [
            "task",
            "statusUpdate",
            "artifactUpdate",
            "artifactUpdate",
            "statusUpdate",
        ]
        assert [s["state"] for s in log["statusHistory"]] == [
            "TASK_STATE_SUBMITTED",
            "TASK_STATE_WORKING",
            "TASK_STATE_COMPLETED",
        ]
        task = Task.from_wire((await api.task(task_id)).json())
        assert task.status.state is TaskState.COMPLETED
        assert task.artifacts is not None and [p.text for p in task.artifacts[0].parts] == ["part one, ", "part two"]
        assert len(task.history or []) == 3
    finally:
        await api.aclose()
        codes = await asyncio.to_thread(stack.stop)
    assert codes["taskstore"] == 0, process.log_tail()


async def test_stop_during_a_backlog_keeps_every_received_event(
    agent: Agent, broker: BrokerHandle, tmp_path: Any
) -> None:
    """The client acknowledges what it receives before the store writes it, so a stop must write all that was
    received: publish a backlog while the store is down, stop it as soon as it is back, and count."""
    stack = taskstore_stack(broker, tmp_path)
    process = await asyncio.to_thread(stack.launch, stack.taskstore())  # creates the broker session
    api = StoreClient(stack.taskstore_url)
    try:
        assert await asyncio.to_thread(process.stop) == 0
        context_id, count = new_id("ctx-"), 400
        for index in range(count):
            await agent.publish(snapshot(new_id(f"task-{index}-"), context_id))
        await asyncio.to_thread(process.start)
        await asyncio.to_thread(process.wait_ready, 30)
        assert await asyncio.to_thread(process.stop) == 0  # SIGTERM while the backlog streams in
        assert "not recorded" not in process.log_path.read_text()

        await asyncio.to_thread(process.start)
        await asyncio.to_thread(process.wait_ready, 30)

        async def all_there() -> bool:
            return (await api.list(contextId=context_id, pageSize=1)).json()["totalSize"] == count

        await eventually(all_there, 15, f"{count} tasks after the restart")
    finally:
        await api.aclose()
        codes = await asyncio.to_thread(stack.stop)
    assert codes["taskstore"] == 0, process.log_tail()


async def test_unhealthy_without_broker(tmp_path: Any) -> None:
    """No broker to consume from: the service runs, says so on /healthz, and still stops cleanly."""
    ports = Ports(mqtt=free_port(), redis=0, registry=0, taskstore=free_port(), coordinator=0)
    stack = Stack(run_dir=tmp_path, ports=ports, org=f"ts-{uuid.uuid4().hex[:12]}")
    process = stack.taskstore()
    process.start()
    try:
        async with httpx.AsyncClient(base_url=stack.taskstore_url, timeout=2.0) as client:

            async def answered() -> httpx.Response | None:
                try:
                    return await client.get("/healthz")
                except httpx.TransportError:
                    return None

            response = await eventually(answered, 20, "an answer from /healthz")
            assert response.status_code == 503
            assert response.json() == {"status": "unavailable", "database": "ok", "mqtt": "disconnected"}
    finally:
        code = await asyncio.to_thread(process.stop)
    assert code == 0, process.log_tail()


async def test_states_by_id_are_read_in_one_request_within_the_readers_scope(
    agent: Agent, api: StoreClient, store_stack: Stack, mqtt_client: aiomqtt.Client
) -> None:
    """`POST /task-states`: the states of the tasks the store holds among the ids asked (unknown ones left out),
    scoped as every read is: an owner sees only its own tasks, an operator (scope=all) every one."""
    coordinator = AgentAddress(store_stack.org, store_stack.unit, "coordinator")
    done, working, theirs, unknown = (new_id("task-") for _ in range(4))
    owners = ((done, "key:alice"), (working, "key:alice"), (theirs, "key:bob"))
    await publish_owners(mqtt_client, coordinator.owner_topic, *owners)  # one message: they land together
    context = new_id("ctx-")
    for task_id in (done, working, theirs):
        await agent.publish(snapshot(task_id, context, TaskState.WORKING))
    await agent.publish(status(done, context, TaskState.COMPLETED))
    await api.wait_events(done, 2)

    async def states(**scope: str) -> dict[str, str] | None:
        response = await api.http.post("/task-states", params=scope, json={"ids": [done, working, theirs, unknown]})
        assert response.status_code == 200, response.text
        return response.json()["states"]

    everyone = {done: "TASK_STATE_COMPLETED", working: "TASK_STATE_WORKING", theirs: "TASK_STATE_WORKING"}
    assert await eventually(lambda: _is(states(scope="all"), everyone), what="every state recorded")
    alices = {done: "TASK_STATE_COMPLETED", working: "TASK_STATE_WORKING"}
    assert await eventually(lambda: _is(states(owner="key:alice", tenant="t1"), alices), what="the owners landed")
    assert await states(owner="key:bob", tenant="t1") == {theirs: "TASK_STATE_WORKING"}
    assert await states(owner="key:bob") == {}  # another tenant's key:bob
    most = [*(new_id("none-") for _ in range(999)), done]  # the most one request may ask about
    response = await api.http.post("/task-states", params={"scope": "all"}, json={"ids": most})
    assert response.status_code == 200 and response.json() == {"states": {done: "TASK_STATE_COMPLETED"}}


@pytest.mark.parametrize(
    ("params", "body"),
    [
        ({}, b'{"ids": []}'),  # no read scope
        ({"scope": "all"}, b"{not json"),
        ({"scope": "all"}, b"\xff\xfe"),  # not UTF-8
        ({"scope": "all"}, b'["a list"]'),
        ({"scope": "all"}, b'{"ids": "one id"}'),
        ({"scope": "all"}, b'{"ids": [1, 2]}'),
        ({"scope": "all"}, b'{"ids": [null]}'),
        ({"scope": "all"}, json.dumps({"ids": [f"t{i}" for i in range(1001)]}).encode()),  # over 1,000 ids
        ({"scope": "all"}, json.dumps({"ids": ["x" * 1_100_000]}).encode()),  # over the body's size
        ({"scope": "all"}, b'{"ids": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),  # nested past the parser's depth
        ({"scope": "all"}, b'{"ids": ["\\ud800"]}'),  # a lone surrogate: no database can take it
        ({"scope": "all"}, b'{"ids": ["a\\u0000b"]}'),  # NUL: PostgreSQL text cannot hold it
    ],
)
async def test_invalid_state_reads_are_400(api: StoreClient, params: dict[str, str], body: bytes) -> None:
    response = await api.http.post("/task-states", params=params, content=body)
    assert response.status_code == 400
    assert isinstance(response.json()["error"], str)
