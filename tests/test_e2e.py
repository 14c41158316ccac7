"""The whole mesh as local processes, driven through the official a2a-sdk client as a user would."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest
from a2a.client import Client
from a2a.types import a2a_pb2 as pb
from a2a.utils.errors import A2AError

from a2amesh.binding import MeshRequester
from a2amesh.topics import AgentAddress
from devstack.stack import Stack
from tests.conftest import collect, eventually, send_request, user_message

COMPLETED, CANCELED, WORKING = pb.TASK_STATE_COMPLETED, pb.TASK_STATE_CANCELED, pb.TASK_STATE_WORKING


async def test_blocking_send_completes_with_the_agents_artifact(make_client) -> None:
    events = await collect(make_client(), send_request(user_message("hello mesh"), skill="echo"))

    assert len(events) == 1 and events[0].HasField("task")
    task = events[0].task
    assert task.status.state == COMPLETED
    assert [part.text for artifact in task.artifacts for part in artifact.parts] == ["hello mesh"]
    assert task.history[0].parts[0].text == "hello mesh"


async def test_streaming_yields_task_working_artifact_then_completed(make_client) -> None:
    events = await collect(make_client(streaming=True), send_request(user_message("stream me"), skill="echo"))

    kinds = [event.WhichOneof("payload") for event in events]
    assert kinds[0] == "task" and events[0].task.status.state == pb.TASK_STATE_SUBMITTED
    states = [event.status_update.status.state for event in events if event.HasField("status_update")]
    assert states[0] == WORKING and states[-1] == COMPLETED
    artifact_index = kinds.index("artifact_update")
    assert kinds.index("status_update") < artifact_index < len(kinds) - 1
    assert events[artifact_index].artifact_update.artifact.parts[0].text == "stream me"
    task_ids = {events[0].task.id, *(e.status_update.task_id for e in events if e.HasField("status_update"))}
    assert len(task_ids) == 1


async def test_store_records_the_whole_history_and_coordinator_serves_get_and_list(
    mesh: Stack, make_client, http: httpx.AsyncClient
) -> None:
    context_id = str(uuid.uuid4())
    client: Client = make_client()
    [event] = await collect(client, send_request(user_message("remember me", context_id=context_id), skill="echo"))
    task_id = event.task.id

    async def recorded() -> dict | None:
        response = await http.get(f"{mesh.taskstore_url}/tasks/{task_id}/events?scope=all")
        body = response.json() if response.status_code == 200 else None
        done = body and body["statusHistory"] and body["statusHistory"][-1]["state"] == "TASK_STATE_COMPLETED"
        return body if done else None

    record = await eventually(recorded, what="task recorded COMPLETED in the store")
    assert record["agent"] == f"{mesh.org}/{mesh.unit}/echo"
    assert [status["state"] for status in record["statusHistory"]] == [
        "TASK_STATE_SUBMITTED",
        "TASK_STATE_WORKING",
        "TASK_STATE_COMPLETED",
    ]
    assert [item["kind"] for item in record["events"]] == ["task", "statusUpdate", "artifactUpdate", "statusUpdate"]

    fetched = await client.get_task(pb.GetTaskRequest(id=task_id))
    assert fetched.status.state == COMPLETED and fetched.artifacts[0].parts[0].text == "remember me"

    page = await client.list_tasks(pb.ListTasksRequest(context_id=context_id))
    assert [task.id for task in page.tasks] == [task_id] and page.total_size == 1
    assert page.tasks[0].status.state == COMPLETED


async def test_http_json_face_serves_send_and_get(make_client) -> None:
    client = make_client(transport="HTTP+JSON")
    [event] = await collect(client, send_request(user_message("over rest"), skill="echo"))
    assert event.task.status.state == COMPLETED
    fetched = await client.get_task(pb.GetTaskRequest(id=event.task.id))
    assert fetched.artifacts[0].parts[0].text == "over rest"


async def test_registry_lists_both_agents_online_with_their_skills(mesh: Stack, http: httpx.AsyncClient) -> None:
    agents = (await http.get(f"{mesh.registry_url}/agents")).json()["agents"]
    by_id = {agent["agentId"]: agent for agent in agents}
    assert by_id["echo"]["status"] == "online" and "echo" in by_id["echo"]["skills"]
    assert by_id["research"]["status"] == "online" and "research" in by_id["research"]["skills"]
    for agent in (by_id["echo"], by_id["research"]):
        assert all(skill.get("examples") for skill in agent["card"]["skills"])


async def test_sigkilled_agent_is_marked_offline_through_its_will(mesh: Stack, http: httpx.AsyncClient) -> None:
    agent_id = f"echo-doomed-{uuid.uuid4().hex[:6]}"
    doomed = mesh.launch(mesh.agent(agent_id, "agent_echo"))
    url = f"{mesh.registry_url}/agents/{mesh.org}/{mesh.unit}/{agent_id}"
    assert (await http.get(url)).json()["status"] == "online"

    doomed.kill()

    async def offline() -> dict | None:
        record = (await http.get(url)).json()
        return record if record["status"] == "offline" else None

    record = await eventually(offline, timeout=60, what="agent marked offline")  # keepalive x1.5 at worst
    assert record["statusSource"] == "lwt"


async def test_cancel_ends_a_slow_task_canceled_at_the_agent_and_in_the_store(
    mesh: Stack, make_client, http: httpx.AsyncClient
) -> None:
    client = make_client()
    request = send_request(user_message("slow"), skill="echo", return_immediately=True, delayMs=30_000)
    [event] = await collect(client, request)
    task_id = event.task.id
    assert event.task.status.state in (pb.TASK_STATE_SUBMITTED, WORKING)

    canceled = await client.cancel_task(pb.CancelTaskRequest(id=task_id))
    assert canceled.status.state == CANCELED

    async def stored_state() -> str | None:
        response = await http.get(f"{mesh.taskstore_url}/tasks/{task_id}?scope=all")
        state = response.json()["status"]["state"] if response.status_code == 200 else None
        return state if state == "TASK_STATE_CANCELED" else None

    await eventually(stored_state, what="store records CANCELED")
    assert (await client.get_task(pb.GetTaskRequest(id=task_id))).status.state == CANCELED
    at_agent = await ask_agent(mesh, "echo", "GetTask", {"id": task_id})
    assert at_agent["status"]["state"] == "TASK_STATE_CANCELED"
    with pytest.raises(A2AError, match=r"cannot be canceled|already"):
        await client.cancel_task(pb.CancelTaskRequest(id=task_id))


async def test_return_immediately_then_subscribe_follows_the_task_to_completion(make_client) -> None:
    client = make_client(streaming=True)
    request = send_request(user_message("later"), skill="echo", return_immediately=True, delayMs=1500)
    blocking = make_client()
    [event] = await collect(blocking, request)
    assert event.task.status.state in (pb.TASK_STATE_SUBMITTED, WORKING)

    events = [item async for item in client.subscribe(pb.SubscribeToTaskRequest(id=event.task.id))]
    assert events[0].HasField("task")
    assert events[-1].status_update.status.state == COMPLETED

    with pytest.raises(A2AError):
        _ = [item async for item in client.subscribe(pb.SubscribeToTaskRequest(id=event.task.id))]


async def test_follow_up_to_a_finished_task_is_refused(make_client) -> None:
    client = make_client()
    [event] = await collect(client, send_request(user_message("once"), skill="echo"))
    follow_up = user_message("again", task_id=event.task.id, context_id=event.task.context_id)
    with pytest.raises(A2AError, match="already"):
        await collect(client, send_request(follow_up))


async def ask_agent(mesh: Stack, agent_id: str, method: str, params: dict) -> dict:
    """Ask an agent directly over MQTT, as any requester on the mesh could."""
    requester = MeshRequester(mesh.tester_settings(), mesh_address(mesh, f"probe-{uuid.uuid4().hex[:6]}"))
    stop = asyncio.Event()
    link = asyncio.create_task(requester.run(stop))
    try:
        await asyncio.wait_for(requester.link.connected.wait(), timeout=10)
        return await requester.call(mesh_address(mesh, agent_id).request_topic, method, params)
    finally:
        stop.set()
        await link


def mesh_address(mesh: Stack, name: str) -> AgentAddress:
    return AgentAddress(mesh.org, mesh.unit, name)


def rpc(method: str, params: dict, request_id: int = 1) -> dict:
    return {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}


HEADERS = {"A2A-Version": "1.0", "Content-Type": "application/json"}


async def test_unknown_skill_is_invalid_params(mesh: Stack, http: httpx.AsyncClient) -> None:
    message = {"messageId": "m1", "role": "ROLE_USER", "parts": [{"text": "hi"}]}
    body = rpc("SendMessage", {"message": message, "metadata": {"skill": "no-such-skill"}})
    reply = (await http.post(f"{mesh.coordinator_url}/", json=body, headers=HEADERS)).json()
    assert reply["error"]["code"] == -32602 and "no-such-skill" in reply["error"]["message"]
    assert reply["id"] == 1


async def test_unknown_task_id_is_task_not_found(mesh: Stack, http: httpx.AsyncClient, make_client) -> None:
    missing = str(uuid.uuid4())
    reply = (await http.post(f"{mesh.coordinator_url}/", json=rpc("GetTask", {"id": missing}), headers=HEADERS)).json()
    assert reply["error"]["code"] == -32001
    with pytest.raises(A2AError, match="not found"):
        await make_client().get_task(pb.GetTaskRequest(id=missing))
    rest = await http.get(f"{mesh.coordinator_url}/tasks/{missing}", headers={"A2A-Version": "1.0"})
    assert rest.status_code == 404


async def test_malformed_json_is_a_parse_error(mesh: Stack, http: httpx.AsyncClient) -> None:
    response = await http.post(
        f"{mesh.coordinator_url}/", content=b'{"jsonrpc": "2.0", "id": 1, "method"', headers=HEADERS
    )
    assert response.json()["error"]["code"] == -32700


async def test_unknown_method_and_wrong_shape_are_rejected(mesh: Stack, http: httpx.AsyncClient) -> None:
    unknown = (await http.post(f"{mesh.coordinator_url}/", json=rpc("NoSuchMethod", {}), headers=HEADERS)).json()
    assert unknown["error"]["code"] == -32601
    wrong = rpc("SendMessage", {"message": {"messageId": "m", "role": "ROLE_USER", "parts": []}})
    empty_parts = (await http.post(f"{mesh.coordinator_url}/", json=wrong, headers=HEADERS)).json()
    assert empty_parts["error"]["code"] == -32602


async def test_agent_card_is_served_with_the_meshs_live_skills(mesh: Stack, http: httpx.AsyncClient) -> None:
    response = await http.get(f"{mesh.coordinator_url}/.well-known/agent-card.json")
    assert response.status_code == 200 and response.headers.get("etag")
    card = response.json()
    assert {"echo", "research"} <= {skill["id"] for skill in card["skills"]}
    bindings = {(i["protocolBinding"], i["protocolVersion"]) for i in card["supportedInterfaces"]}
    assert bindings == {(b, v) for b in ("JSONRPC", "HTTP+JSON") for v in ("1.0", "0.3")} | {("GRPC", "1.0")}
