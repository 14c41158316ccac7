"""One standard A2A endpoint per agent (`/agents/{name}/`), driven by the official a2a-sdk client as an orchestrator
would drive it: resolve the agent's card at its own URL, then send without any mesh-specific metadata."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import httpx
import pytest
from a2a.client import A2ACardResolver, Client, ClientConfig, ClientFactory
from a2a.types import a2a_pb2 as pb
from a2a.utils.errors import A2AError
from google.protobuf.json_format import MessageToDict

from devstack.stack import Stack
from tests.conftest import collect, eventually, forget_card, send_request, user_message

COMPLETED, CANCELED = pb.TASK_STATE_COMPLETED, pb.TASK_STATE_CANCELED
EXAMPLE_AGENTS = {"echo", "research", "writer", "reviewer", "analyst", "workflows"}


@pytest.fixture
def agent_client(mesh: Stack, http: httpx.AsyncClient) -> Callable[..., asyncio.Future[Client]]:
    """An a2a-sdk client built from the card served at one agent's URL, as any A2A client would build it."""

    async def make(name: str, streaming: bool = False, transport: str = "JSONRPC") -> Client:
        card = await A2ACardResolver(http, f"{mesh.coordinator_url}/agents/{name}/").get_agent_card()
        config = ClientConfig(httpx_client=http, streaming=streaming, supported_protocol_bindings=[transport])
        return ClientFactory(config).create(card)

    return make


def data_parts(task: pb.Task) -> list[dict]:
    return [MessageToDict(part.data) for artifact in task.artifacts for part in artifact.parts if part.HasField("data")]


async def test_the_catalogue_lists_every_online_agent_with_a_card_url_that_serves_its_own_card(mesh: Stack) -> None:
    async with httpx.AsyncClient(timeout=30.0) as anonymous:  # discovery needs no key, like the root's card
        catalogue = (await anonymous.get(f"{mesh.coordinator_url}/agents")).json()["agents"]
        by_name = {entry["name"]: entry for entry in catalogue}
        assert set(by_name) >= EXAMPLE_AGENTS
        for name in EXAMPLE_AGENTS:
            entry = by_name[name]
            base = f"{mesh.coordinator_url}/agents/{name}"
            assert entry["url"] == f"{base}/" and entry["cardUrl"] == f"{base}/.well-known/agent-card.json"
            response = await anonymous.get(entry["cardUrl"])
            assert response.status_code == 200, response.text
            card = response.json()
            registered = (await anonymous.get(f"{mesh.registry_url}/agents/{mesh.org}/{mesh.unit}/{name}")).json()
            assert card["name"] == registered["card"]["name"] == entry["title"]
            assert [skill["id"] for skill in card["skills"]] == entry["skills"] == registered["skills"]
            # the coordinator's URLs for this agent, exactly: its host, the path once, every binding it serves (gRPC
            # on its own port, the agent named by the requests' tenant)
            assert {(i["protocolBinding"], i["url"], i.get("tenant")) for i in card["supportedInterfaces"]} == {
                ("JSONRPC", f"{base}/", None),
                ("HTTP+JSON", base, None),
                ("GRPC", f"127.0.0.1:{mesh.ports.coordinator_grpc}", name),
            }
            root = (await anonymous.get(f"{mesh.coordinator_url}/.well-known/agent-card.json")).json()
            assert card["securitySchemes"] == root["securitySchemes"]
            assert card["securityRequirements"] == root["securityRequirements"]
            assert card["capabilities"]["streaming"] is True


async def test_a_question_to_the_research_endpoint_gets_cited_passages(agent_client) -> None:
    client = await agent_client("research")
    [event] = await collect(client, send_request(user_message("how do retained messages work")))
    task = event.task
    assert task.status.state == COMPLETED
    passages = [value for value in data_parts(task) if "passage" in value]
    assert passages and all(value["source"] and value["title"] for value in passages)
    assert any("retain" in value["passage"].lower() for value in passages)
    routing = MessageToDict(task.metadata)["routing"]
    assert routing["skill"] == "research"


async def test_a_csv_to_the_analyst_endpoint_gets_statistics(agent_client) -> None:
    client = await agent_client("analyst", streaming=True)
    csv = "city,temp_c,rain_mm\nOslo,4,12.5\nLima,19,0\nCairo,24,0.2\n"
    events = await collect(client, send_request(user_message(csv)))
    assert events[-1].status_update.status.state == COMPLETED
    [stats] = [
        MessageToDict(part.data)
        for event in events
        if event.HasField("artifact_update")
        for part in event.artifact_update.artifact.parts
        if part.HasField("data")
    ]
    assert stats["rowCount"] == 3
    columns = {column["name"]: column for column in stats["columns"]}
    assert columns["temp_c"]["mean"] == pytest.approx((4 + 19 + 24) / 3)


async def test_the_http_json_binding_of_an_agent_endpoint_sends_and_gets(agent_client) -> None:
    client = await agent_client("echo", transport="HTTP+JSON")
    [event] = await collect(client, send_request(user_message("over rest, to echo")))
    assert event.task.status.state == COMPLETED
    fetched = await client.get_task(pb.GetTaskRequest(id=event.task.id))
    assert fetched.artifacts[0].parts[0].text == "over rest, to echo"


async def test_an_agent_endpoint_reaches_only_its_agent(agent_client) -> None:
    client = await agent_client("echo")
    with pytest.raises(A2AError, match="serves only agent echo"):
        await collect(client, send_request(user_message("hi"), agent="research"))
    with pytest.raises(A2AError, match="has no skill 'research'"):
        await collect(client, send_request(user_message("hi"), skill="research"))
    [event] = await collect(client, send_request(user_message("how do retained messages work")))
    assert event.task.artifacts[0].parts[0].text == "how do retained messages work"  # echo's, not research's


async def test_get_list_and_cancel_at_an_agent_endpoint_see_only_its_tasks(agent_client) -> None:
    echo, research = await agent_client("echo"), await agent_client("research")
    context_id = str(uuid.uuid4())
    [slow] = await collect(
        echo, send_request(user_message("slow", context_id=context_id), return_immediately=True, delayMs=30_000)
    )
    [other] = await collect(research, send_request(user_message("what is a last will", context_id=context_id)))
    assert other.task.status.state == COMPLETED

    async def listed(client: Client) -> set[str]:
        page = await client.list_tasks(pb.ListTasksRequest(context_id=context_id))
        return {task.id for task in page.tasks}

    assert await eventually(lambda: _equal(listed(echo), {slow.task.id}), what="echo's task alone in its list")
    assert await eventually(lambda: _equal(listed(research), {other.task.id}), what="research's task alone")

    with pytest.raises(A2AError, match="not found"):
        await echo.get_task(pb.GetTaskRequest(id=other.task.id))
    with pytest.raises(A2AError, match="not found"):
        await research.cancel_task(pb.CancelTaskRequest(id=slow.task.id))
    assert (await research.get_task(pb.GetTaskRequest(id=other.task.id))).status.state == COMPLETED

    canceled = await echo.cancel_task(pb.CancelTaskRequest(id=slow.task.id))
    assert canceled.status.state == CANCELED


async def _equal(value: asyncio.Future[set[str]], expected: set[str]) -> bool:
    return await value == expected


async def test_an_offline_agent_leaves_the_catalogue_and_its_endpoint_says_retry_later(
    mesh: Stack, http: httpx.AsyncClient
) -> None:
    agent_id = f"echo-leaving-{uuid.uuid4().hex[:6]}"
    process = mesh.launch(mesh.agent(agent_id, "agent_echo"))
    base = f"{mesh.coordinator_url}/agents/{agent_id}"
    send = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "SendMessage",
        "params": {"message": {"messageId": "m1", "role": "ROLE_USER", "parts": [{"text": "hi"}]}},
    }
    headers = {"A2A-Version": "1.0"}
    try:

        async def names() -> set[str]:
            return {entry["name"] for entry in (await http.get(f"{mesh.coordinator_url}/agents")).json()["agents"]}

        await eventually(lambda: _contains(names(), agent_id), what="new agent in the catalogue")
        answer = (await http.post(f"{base}/", json=send, headers=headers)).json()
        assert answer["result"]["task"]["status"]["state"] == "TASK_STATE_COMPLETED"

        process.stop()  # graceful: it publishes its card offline

        async def gone() -> bool:
            return agent_id not in await names()

        await eventually(gone, what="offline agent gone from the catalogue")
        card = await http.get(f"{base}/.well-known/agent-card.json")
        assert card.status_code == 503 and int(card.headers["retry-after"]) > 0
        assert "offline" in card.json()["error"]["message"]
        refused = await asyncio.wait_for(http.post(f"{base}/", json=send, headers=headers), timeout=10)
        assert refused.status_code == 503 and int(refused.headers["retry-after"]) > 0
        error = refused.json()["error"]
        assert "offline" in error["message"] and error["data"]["retryable"] is True
        rest = await http.post(f"{base}/message:send", json=send["params"], headers=headers)
        assert rest.status_code == 503 and rest.json()["error"]["status"] == "UNAVAILABLE"
    finally:
        process.stop()
        await forget_card(mesh, agent_id)


async def _contains(value: asyncio.Future[set[str]], name: str) -> bool:
    return name in await value


async def test_an_unknown_agent_is_not_found(mesh: Stack, http: httpx.AsyncClient) -> None:
    base = f"{mesh.coordinator_url}/agents/nobody-{uuid.uuid4().hex[:6]}"
    card = await http.get(f"{base}/.well-known/agent-card.json")
    assert card.status_code == 404 and "no agent named" in card.json()["error"]["message"]
    call = {"jsonrpc": "2.0", "id": 1, "method": "GetTask", "params": {"id": str(uuid.uuid4())}}
    answer = await http.post(f"{base}/", json=call, headers={"A2A-Version": "1.0"})
    assert answer.status_code == 404 and answer.json()["error"]["code"] == -32602


async def test_agent_endpoints_want_the_same_key_as_the_root(mesh: Stack) -> None:
    call = {"jsonrpc": "2.0", "id": 1, "method": "GetTask", "params": {"id": str(uuid.uuid4())}}
    async with httpx.AsyncClient(timeout=30.0) as anonymous:
        assert (await anonymous.post(f"{mesh.coordinator_url}/agents/echo/", json=call)).status_code == 401
        assert (await anonymous.get(f"{mesh.coordinator_url}/agents/echo/tasks")).status_code == 401
        wrong = {"Authorization": "Bearer not-a-key"}
        assert (
            await anonymous.post(f"{mesh.coordinator_url}/agents/echo/", json=call, headers=wrong)
        ).status_code == 401


async def test_bad_bodies_at_an_agent_endpoint_get_the_routes_own_errors(mesh: Stack, http: httpx.AsyncClient) -> None:
    base = f"{mesh.coordinator_url}/agents/echo"
    headers = {"A2A-Version": "1.0", "Content-Type": "application/json"}
    rpc = await http.post(f"{base}/", content=b'{"jsonrpc": "2.0", "id": 1, "method": NaN}', headers=headers)
    assert rpc.status_code == 200 and rpc.json()["error"]["code"] == -32700
    rest = await http.post(f"{base}/message:send", content=b"\xff\xfe not utf-8", headers=headers)
    assert rest.status_code == 400 and rest.json()["error"]["status"] == "INVALID_ARGUMENT"
    unknown_method = {"jsonrpc": "2.0", "id": 2, "method": "NoSuchMethod", "params": {}}
    answer = (await http.post(f"{base}/", json=unknown_method, headers=headers)).json()
    assert answer["error"]["code"] == -32601
    message = {"messageId": "m", "role": "ROLE_USER", "parts": []}
    empty = {"jsonrpc": "2.0", "id": 3, "method": "SendMessage", "params": {"message": message}}
    answer = (await http.post(f"{base}/", json=empty, headers=headers)).json()
    assert answer["error"]["code"] == -32602 and "parts" in answer["error"]["message"]


async def test_the_workflows_endpoint_picks_the_workflow_from_the_text(agent_client) -> None:
    client = await agent_client("workflows")
    text = "research these in parallel:\nretained messages\nlast will"
    [event] = await collect(client, send_request(user_message(text)))
    task = event.task
    assert task.status.state == COMPLETED, task.status.message
    assert MessageToDict(task.metadata)["routing"]["skill"] == "workflow.fanout"
    [summary] = [value for value in data_parts(task) if "childTaskIds" in value]
    assert len(summary["childTaskIds"]) == 3  # one research step per line
