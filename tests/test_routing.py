"""The root endpoint without mesh-specific metadata: the router picks the skill from the message's text, says why
in the task's metadata, and explicit `metadata.skill` / `metadata.agent` still win."""

from __future__ import annotations

import httpx
from a2a.types import a2a_pb2 as pb
from google.protobuf.json_format import MessageToDict

from devstack.stack import Stack
from tests.conftest import collect, eventually, send_request, user_message
from tests.test_fast_path import FAST, SDK, as_sdk_reads_it

COMPLETED = pb.TASK_STATE_COMPLETED


def routing_of(task: pb.Task) -> dict:
    return MessageToDict(task.metadata).get("routing", {})


async def test_a_question_at_the_root_goes_to_research_and_the_task_says_why(
    mesh: Stack, make_client, http: httpx.AsyncClient
) -> None:
    [event] = await collect(make_client(), send_request(user_message("how do retained messages work")))
    task = event.task
    assert task.status.state == COMPLETED
    assert any("passage" in MessageToDict(part.data) for a in task.artifacts for part in a.parts if part.data)
    routing = routing_of(task)
    assert routing["skill"] == "research" and routing["score"] >= 1.0
    assert "retain" in routing["matched"] and "research" in routing["reason"]

    async def recorded() -> dict | None:  # the durable record keeps why, too
        response = await http.get(f"{mesh.taskstore_url}/tasks/{task.id}?scope=all")
        return response.json() if response.status_code == 200 else None

    stored = await eventually(recorded, what="task in the store")
    assert stored["metadata"]["routing"] == routing


async def test_a_csv_at_the_root_goes_to_the_analyst(make_client) -> None:
    csv = "region,sales\nnorth,120\nsouth,95\neast,101\n"
    [event] = await collect(make_client(), send_request(user_message(csv)))
    assert event.task.status.state == COMPLETED
    assert routing_of(event.task)["skill"] == "analyze-table"
    [stats] = [MessageToDict(part.data) for a in event.task.artifacts for part in a.parts if part.HasField("data")]
    assert stats["rowCount"] == 3


async def test_nothing_matching_goes_to_the_default_skill_and_says_so(make_client) -> None:
    [event] = await collect(make_client(), send_request(user_message("zzkq vrrp")))
    assert event.task.artifacts[0].parts[0].text == "zzkq vrrp"
    routing = routing_of(event.task)
    assert routing["skill"] == "echo" and "default skill echo" in routing["reason"]


async def test_explicit_skill_or_agent_wins_and_leaves_no_routing_note(make_client) -> None:
    question = "how do retained messages work"
    for metadata in ({"skill": "echo"}, {"agent": "echo"}):
        [event] = await collect(make_client(), send_request(user_message(question), **metadata))
        assert event.task.artifacts[0].parts[0].text == question, metadata
        assert routing_of(event.task) == {}, metadata


async def test_routed_sends_mean_the_same_on_the_fast_path_and_the_sdks(mesh: Stack, http: httpx.AsyncClient) -> None:
    """Both the root and an agent's endpoint: the routing note too is the same whichever path answers."""
    for url in (f"{mesh.coordinator_url}/", f"{mesh.coordinator_url}/agents/research/"):
        results, raw = [], []
        for version in (FAST, SDK):
            body = {
                "jsonrpc": "2.0",
                "id": "call-1",
                "method": "SendMessage",
                "params": {"message": {"messageId": "m1", "role": "ROLE_USER", "parts": [{"text": "list sources"}]}},
            }
            response = await http.post(url, json=body, headers={"A2A-Version": version})
            reply = response.json()
            assert "error" not in reply, (url, reply)
            raw.append(response.text)
            results.append(as_sdk_reads_it(reply["result"], pb.SendMessageResponse))
        fast, sdk = results
        assert fast == sdk, url
        assert fast["task"]["metadata"]["routing"]["skill"] == "list-sources", url
        # which path answered: the fast path writes the envelope's fields first, the SDK's routes the result first
        assert raw[0].startswith('{"jsonrpc":"2.0"') and not raw[1].startswith('{"jsonrpc"'), url
