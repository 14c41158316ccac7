"""The reviewer agent as a real process on a real broker: its retained card, the INPUT_REQUIRED round trip (a
question, then the answer on the same task), a rejection, and a clean SIGTERM exit."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from a2amesh.binding import MeshRequester
from a2amesh.mqtt import STATUS_PROPERTY, Envelope, MqttLink
from a2amesh.topics import AgentAddress
from devstack.fixtures import BrokerHandle
from devstack.stack import Ports, Stack

ORG, UNIT = "acme", "default"
GOOD = (Path(__file__).parent / "good_report.md").read_text()


def short_id() -> str:
    return uuid.uuid4().hex[:8]


@contextlib.asynccontextmanager
async def running(link: MqttLink | MeshRequester) -> AsyncIterator[None]:
    """Keep a link (or requester) connected for the duration of the block."""
    stop = asyncio.Event()
    task = asyncio.create_task(link.run(stop))
    connected = link.link.connected if isinstance(link, MeshRequester) else link.connected
    try:
        async with asyncio.timeout(10):
            await connected.wait()
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=10)


async def stream(
    requester: MeshRequester, agent: AgentAddress, message: dict[str, Any], **metadata: Any
) -> list[dict[str, Any]]:
    """Every StreamResponse of one SendStreamingMessage, in arrival order."""
    params: dict[str, Any] = {"message": {"messageId": uuid.uuid4().hex, "role": "ROLE_USER", **message}}
    if metadata:
        params["metadata"] = metadata
    async with asyncio.timeout(30):
        return [item async for item in requester.request(agent.request_topic, "SendStreamingMessage", params).results()]


def final_status(items: list[dict[str, Any]]) -> tuple[str, str]:
    status = items[-1]["statusUpdate"]["status"]
    return status["state"], status["message"]["parts"][0]["text"]


async def test_reviewer_asks_for_the_audience_then_completes_over_mqtt(broker: BrokerHandle, tmp_path: Path) -> None:
    agent_id = f"reviewer-{short_id()}"
    agent = AgentAddress(ORG, UNIT, agent_id)
    cards: asyncio.Queue[Envelope] = asyncio.Queue()

    async def on_card(envelope: Envelope) -> None:
        await cards.put(envelope)

    watcher = MqttLink(broker.settings, f"{ORG}/{UNIT}/watch-{short_id()}", [agent.discovery_topic], on_card)
    requester = MeshRequester(broker.settings, AgentAddress(ORG, UNIT, f"tester-{short_id()}"))
    stack = Stack(
        run_dir=tmp_path,
        ports=Ports(mqtt=broker.port, redis=0, registry=0, taskstore=0, coordinator=0),
        broker_of=broker.stack,
    )
    process = stack.service("reviewer-x", "agent_reviewer", {"MESH_AGENT_ID": agent_id}, ready=lambda: True)
    task_id = str(uuid.uuid4())
    async with running(watcher):
        try:
            stack.launch(process)
            async with asyncio.timeout(20):
                while True:
                    envelope = await cards.get()
                    if envelope.payload and envelope.user_properties.get(STATUS_PROPERTY) == "online":
                        break
            card = json.loads(envelope.payload)
            assert card["name"] == "Reviewer Agent"
            assert [skill["id"] for skill in card["skills"]] == ["review-report"]
            assert card["skills"][0]["examples"]

            async with running(requester):
                # turn 1: no audience -> the stream ends INPUT_REQUIRED with the question
                asked = await stream(requester, agent, {"parts": [{"text": GOOD}], "taskId": task_id})
                context_id = asked[0]["task"]["contextId"]
                # turn 2: same task and context, a new message carrying the answer
                answer = {"parts": [{"text": "executives"}], "taskId": task_id, "contextId": context_id}
                answered = await stream(requester, agent, answer)
                rejected = await stream(
                    requester, agent, {"parts": [{"data": {"report": "# T"}}], "taskId": str(uuid.uuid4())}
                )
        finally:
            codes = await asyncio.to_thread(stack.stop)
            with contextlib.suppress(Exception):
                await watcher.publish(agent.discovery_topic, b"", retain=True)  # leave no retained card behind
        assert codes == {"reviewer-x": 0}, process.log_tail()

    # the question
    assert asked[0]["task"]["id"] == task_id
    state, question = final_status(asked)
    assert state == "TASK_STATE_INPUT_REQUIRED"
    assert question.startswith("Who is the audience for this report")
    assert not any("artifactUpdate" in item for item in asked)

    # the answer: the same task, now two user turns long, completes with the review
    snapshot = answered[0]["task"]
    assert snapshot["id"] == task_id and snapshot["contextId"] == context_id
    assert [message["role"] for message in snapshot["history"]].count("ROLE_USER") == 2
    (update,) = [item["artifactUpdate"] for item in answered if "artifactUpdate" in item]
    assert update["taskId"] == task_id and update["artifact"]["name"] == "review"
    review = update["artifact"]["parts"][1]["data"]
    assert review["audience"] == "executives" and review["verdict"] == "accept" and review["score"] == 100
    done = "score 100/100 for executives: accept; every check passed."
    assert final_status(answered) == ("TASK_STATE_COMPLETED", done)

    # a data part and no report text
    state, reason = final_status(rejected)
    assert state == "TASK_STATE_REJECTED" and reason.startswith("unsupported input: only data parts")
