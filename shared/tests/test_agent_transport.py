"""An agent's MQTT side alone (binding.transport), on the real broker and with no A2A task machine behind it:
presence (the card retained online with its load, offline when it says goodbye), which messages are requests to
hand on, and its publishes (replies echoing the Correlation Data, events with an event id, a reply too big for one
packet trimmed rather than sent)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiomqtt
import pytest

from a2amesh.binding.machine import IncomingRequest, ReplyAddress
from a2amesh.binding.tasks import Subscriber
from a2amesh.binding.transport import AgentTransport
from a2amesh.models import JsonRpcResponse, StreamResponse, Task, TaskState, TaskStatus, result_response
from a2amesh.mqtt import EVENT_ID_PROPERTY, make_client, publish_properties
from a2amesh.mqtt_base import AUTHORIZATION_PROPERTY, LOAD_PROPERTY, RESPONDER_PROPERTY, STATUS_PROPERTY
from a2amesh.topics import AgentAddress
from devstack.agent_testing import running
from devstack.fixtures import BrokerHandle

WAIT = 20.0
"""Seconds any one message may take to arrive (a loaded machine; bounded)."""

CARD = b'{"name":"transport-test"}'


@contextlib.asynccontextmanager
async def watcher(broker: BrokerHandle, *topics: str) -> AsyncIterator[aiomqtt.Client]:
    """A plain MQTT client subscribed to `topics`: what anyone on the mesh would see."""
    async with make_client(broker.settings, f"watch-{uuid.uuid4().hex[:8]}") as client:
        for topic in topics:
            await client.subscribe(topic, qos=1)
        yield client


async def next_message(client: aiomqtt.Client) -> aiomqtt.Message:
    async with asyncio.timeout(WAIT):
        return await anext(aiter(client.messages))


def user_properties(message: aiomqtt.Message) -> dict[str, str]:
    return dict(getattr(message.properties, "UserProperty", None) or [])


@pytest.fixture
def address() -> AgentAddress:
    return AgentAddress("acme", "transport", f"agent-{uuid.uuid4().hex[:8]}")


async def test_presence_is_the_retained_card_online_with_its_load_then_offline(
    broker: BrokerHandle, address: AgentAddress
) -> None:
    transport = AgentTransport(broker.settings, address, CARD, load=lambda: 0.25)
    async with watcher(broker, address.discovery_topic) as client, running(transport.link):
        online = await next_message(client)
        assert online.payload == CARD
        assert user_properties(online)[STATUS_PROPERTY] == "online"
        assert user_properties(online)[LOAD_PROPERTY] == "0.250"
        await transport.go_offline()
        offline = await next_message(client)
        assert offline.payload == CARD and user_properties(offline)[STATUS_PROPERTY] == "offline"
    async with watcher(broker, address.discovery_topic) as late:  # retained: a newcomer reads the last word
        retained = await next_message(late)
        assert retained.retain and user_properties(retained)[STATUS_PROPERTY] == "offline"
        await late.publish(address.discovery_topic, b"", qos=1, retain=True)  # leave the broker clean


async def test_only_requests_with_a_reply_address_are_handed_on(broker: BrokerHandle, address: AgentAddress) -> None:
    received: asyncio.Queue[IncomingRequest] = asyncio.Queue()
    transport = AgentTransport(broker.settings, address, CARD, received.put)
    topic = address.request_topic
    properties = publish_properties(
        response_topic="$a2a/v1/reply/acme/transport/tester/inbox",
        correlation_data=b"corr-1",
        user=[(AUTHORIZATION_PROPERTY, "Bearer t")],
    )
    async with watcher(broker) as client:
        await client.publish(topic, b"standing order", qos=1, retain=True, properties=properties)
        try:
            async with running(transport.link):  # subscribing, it is handed the retained request: never run
                await client.publish(topic, b"no reply topic", qos=1)
                await client.publish(topic, b'{"jsonrpc":"2.0"}', qos=1, properties=properties)
                request = await asyncio.wait_for(received.get(), WAIT)
        finally:
            await client.publish(topic, b"", qos=1, retain=True)
    assert request == IncomingRequest(
        b'{"jsonrpc":"2.0"}', ReplyAddress("$a2a/v1/reply/acme/transport/tester/inbox", b"corr-1"), "Bearer t"
    )
    assert received.empty()  # the two before it were dropped, not handed on


async def test_replies_echo_the_correlation_and_events_carry_an_event_id(
    broker: BrokerHandle, address: AgentAddress
) -> None:
    transport = AgentTransport(broker.settings, address, CARD)
    reply_topic = f"$a2a/v1/reply/acme/transport/tester/{uuid.uuid4().hex[:8]}"
    async with running(transport.link), watcher(broker, reply_topic, address.event_topic) as client:
        await transport.reply(ReplyAddress(reply_topic, b"c-1"), result_response(3, {"ok": True}))
        reply = await next_message(client)
        assert json.loads(reply.payload) == {"jsonrpc": "2.0", "id": 3, "result": {"ok": True}}
        assert reply.properties.CorrelationData == b"c-1"
        assert user_properties(reply)[RESPONDER_PROPERTY] == address.agent

        task = Task(id=str(uuid.uuid4()), context_id="ctx", status=TaskStatus(state=TaskState.WORKING))
        item = StreamResponse(task=task)
        body = item.to_json().encode()
        await transport.stream(Subscriber(reply_topic, b"c-2", "r", True), item, body)
        streamed = await next_message(client)
        assert json.loads(streamed.payload)["result"] == json.loads(body)
        assert streamed.properties.CorrelationData == b"c-2"

        await transport.record(body)
        event = await next_message(client)
        assert event.topic.value == address.event_topic and json.loads(event.payload) == json.loads(body)
        assert len(user_properties(event)[EVENT_ID_PROPERTY]) == 32


async def test_a_reply_too_big_for_one_packet_loses_its_history_or_becomes_an_error(
    broker: BrokerHandle, address: AgentAddress
) -> None:
    transport = AgentTransport(broker.settings, address, CARD)
    reply_topic = f"$a2a/v1/reply/acme/transport/tester/{uuid.uuid4().hex[:8]}"
    big = "x" * 1_100_000
    with_history: dict[str, Any] = {"id": "t", "status": {"state": "TASK_STATE_COMPLETED"}, "history": [big]}
    async with running(transport.link), watcher(broker, reply_topic) as client:
        await transport.reply(ReplyAddress(reply_topic, b"c"), result_response(1, {"task": with_history}))
        trimmed = json.loads((await next_message(client)).payload)
        assert trimmed["result"]["task"] == {"id": "t", "status": {"state": "TASK_STATE_COMPLETED"}}
        await transport.reply(ReplyAddress(reply_topic, b"c"), result_response(2, {"blob": big}))
        refused = JsonRpcResponse.model_validate_json((await next_message(client)).payload)
        assert refused.error is not None and "too large" in refused.error.message
        assert transport.connected  # the broker never saw an oversized packet, so it kept the connection
