"""The MQTT side of a responder, apart from what the messages mean: one persistent connection on the agent's
request topic (and pool), the card as Will and presence (online with its load, offline on a graceful stop), and
the publishes of replies, stream items and task events — sized to fit the broker's packet limit and carrying the
profile's properties. Each request is handed on as an `IncomingRequest`, to whatever serves it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes

from a2amesh.binding.machine import IncomingRequest, ReplyAddress
from a2amesh.binding.tasks import Subscriber
from a2amesh.binding.wire import MAX_PACKET_BYTES, encode
from a2amesh.models import ErrorCode, JsonRpcResponse, StreamResponse, error_response, result_response
from a2amesh.mqtt import Envelope, MqttLink, NotConnectedError, event_properties, publish_properties
from a2amesh.mqtt_base import (
    AUTHORIZATION_PROPERTY,
    KEEPALIVE_PROPERTY,
    LOAD_PROPERTY,
    RESPONDER_PROPERTY,
    STATUS_PROPERTY,
    STATUS_SOURCE_PROPERTY,
)
from a2amesh.settings import MqttSettings
from a2amesh.topics import AgentAddress, PoolAddress

log = logging.getLogger(__name__)

Receiver = Callable[[IncomingRequest], Awaitable[None]]

LOAD_REPORT_INTERVAL = 1.0
"""Seconds between checks of whether the agent's load changed enough to republish its presence."""

REPORT_WAIT = 60.0
"""Seconds a running task's event or streamed reply waits for the broker (a restart) before the task gives up."""


class AgentTransport:
    """An agent's MQTT connection, its presence and its publishes (the `Outbox` a `TaskMachine` reports through).

    `receive` gets every request that is one (not retained, with Response Topic and Correlation Data; set it
    before `link.run`); `load` says how busy the agent is, for the presence it publishes."""

    def __init__(
        self,
        settings: MqttSettings,
        address: AgentAddress,
        card_payload: bytes,
        receive: Receiver | None = None,
        *,
        pool: PoolAddress | None = None,
        load: Callable[[], float] = lambda: 0.0,
    ) -> None:
        self.address = address
        self.pool = pool
        self.card_payload = card_payload
        self.receive = receive
        self.load = load
        subscriptions = [address.request_topic]
        if pool is not None:
            subscriptions.append(pool.shared_subscription)
        self.link = MqttLink(
            settings,
            address.client_id,
            subscriptions,
            self.on_message,
            will=self._will(),
            persistent=True,
            on_connect=self._announce,
        )

    @property
    def connected(self) -> bool:
        return self.link.connected.is_set()

    # -- presence ----------------------------------------------------------------------------------------
    def _will(self) -> aiomqtt.Will:
        properties = publish_properties(
            user=[(STATUS_PROPERTY, "offline"), (STATUS_SOURCE_PROPERTY, "lwt")], packet=PacketTypes.WILLMESSAGE
        )
        return aiomqtt.Will(self.address.discovery_topic, self.card_payload, qos=1, retain=True, properties=properties)

    def _presence(self, status: str) -> Any:
        return publish_properties(
            user=[(STATUS_PROPERTY, status), (STATUS_SOURCE_PROPERTY, "agent"), (LOAD_PROPERTY, f"{self.load():.3f}")]
        )

    async def _announce(self, client: aiomqtt.Client) -> None:
        await client.publish(
            self.address.discovery_topic, self.card_payload, qos=1, retain=True, properties=self._presence("online")
        )

    async def report_load(self, stop: asyncio.Event) -> None:
        """Republish the card when the load figure changes (at most once per LOAD_REPORT_INTERVAL), so the
        registry can route to the least-loaded replica."""
        reported: str | None = None
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=LOAD_REPORT_INTERVAL)
            current = f"{self.load():.2f}"
            if stop.is_set() or current == reported or not self.connected:
                continue
            try:
                await self.link.publish(
                    self.address.discovery_topic,
                    self.card_payload,
                    retain=True,
                    properties=self._presence("online"),
                    wait=1.0,
                )
                reported = current
            except NotConnectedError:
                continue

    async def leave_pool(self) -> None:
        """Stopping: take no more pool work, so the broker gives it (and any task handed over) to the peers."""
        client = self.link.client
        if self.pool is None or self.pool.shared_subscription not in self.link.subscriptions:
            return
        self.link.subscriptions.remove(self.pool.shared_subscription)
        if client is not None:
            with contextlib.suppress(aiomqtt.MqttError):
                await client.unsubscribe(self.pool.shared_subscription, timeout=5)

    async def go_offline(self) -> None:
        """The graceful goodbye: the card retained as offline, said by the agent (not its Will)."""
        client = self.link.client
        if client is not None:
            with contextlib.suppress(aiomqtt.MqttError):
                await client.publish(
                    self.address.discovery_topic,
                    self.card_payload,
                    qos=1,
                    retain=True,
                    properties=self._presence("offline"),
                )

    # -- requests ----------------------------------------------------------------------------------------
    async def on_message(self, envelope: Envelope) -> None:
        """Hand a request on, unless MQTT already says it is none to answer."""
        if envelope.retain:
            # A retained request would run again on every start and every new pool member: never a standing order.
            log.warning("ignoring a retained request on %s", envelope.topic)
            return
        if not envelope.response_topic or envelope.correlation_data is None:
            log.warning("dropping request on %s without Response Topic or Correlation Data", envelope.topic)
            return
        if self.receive is None:
            raise RuntimeError("AgentTransport.receive is not set: nothing serves the requests")
        await self.receive(
            IncomingRequest(
                envelope.payload,
                ReplyAddress(envelope.response_topic, envelope.correlation_data),
                envelope.user_properties.get(AUTHORIZATION_PROPERTY),
            )
        )

    # -- the outbox --------------------------------------------------------------------------------------
    def record(self, body: bytes) -> Awaitable[None]:
        # the publish itself is handed back to be awaited: no coroutine of its own on the path of every event
        return self.link.publish(self.address.event_topic, body, properties=event_properties(), wait=REPORT_WAIT)

    async def stream(self, subscriber: Subscriber, item: StreamResponse, body: bytes) -> None:
        payload = b'{"jsonrpc":"2.0","id":' + json.dumps(subscriber.request_id).encode() + b',"result":' + body + b"}"
        if len(payload) > MAX_PACKET_BYTES - len(subscriber.reply_topic) - len(subscriber.correlation) - 1024:
            await self.reply(
                ReplyAddress(subscriber.reply_topic, subscriber.correlation),
                result_response(subscriber.request_id, item.to_wire()),
            )  # trimmed or refused
            return
        if subscriber.properties is None:  # the same for every reply to this subscriber, and slow to build
            subscriber.properties = self._reply_properties(subscriber.correlation, reused=True)
        await self.link.publish(
            subscriber.reply_topic, payload, qos=1, properties=subscriber.properties, wait=REPORT_WAIT
        )

    async def keepalive(self, subscriber: Subscriber, body: bytes) -> None:
        user = [(RESPONDER_PROPERTY, self.address.agent), (KEEPALIVE_PROPERTY, "1")]
        properties = publish_properties(correlation_data=subscriber.correlation, user=user)
        await self.link.publish(
            subscriber.reply_topic, stream_payload(subscriber.request_id, body), qos=1, properties=properties, wait=1.0
        )

    async def reply(self, to: ReplyAddress, response: JsonRpcResponse) -> None:
        properties = self._reply_properties(to.correlation)
        limit = MAX_PACKET_BYTES - len(to.topic.encode()) - len(to.correlation) - 1024  # room for header, properties
        await self.link.publish(to.topic, fitted(response, limit), qos=1, properties=properties, wait=REPORT_WAIT)

    def _reply_properties(self, correlation: bytes, reused: bool = False) -> Any:
        user = [(RESPONDER_PROPERTY, self.address.agent)]
        return publish_properties(correlation_data=correlation, user=user, reused=reused)


def stream_payload(request_id: str | int | None, body: bytes) -> bytes:
    """A JSON-RPC result around an already serialized stream item (built by hand: the item is serialized once)."""
    return b'{"jsonrpc":"2.0","id":' + json.dumps(request_id).encode() + b',"result":' + body + b"}"


def fitted(response: JsonRpcResponse, limit: int) -> bytes:
    """The reply's payload within `limit` bytes: as it is, else a task result without its history (which the
    requester sent), else an error that says why (never a packet the broker would disconnect us for)."""
    payload = encode(response)
    if len(payload) <= limit:
        return payload
    result = response.result
    if response.error is None and isinstance(result, dict):
        nested = isinstance(result.get("task"), dict)  # SendMessage's {"task": ...} or a stream's Task item
        task = result["task"] if nested else result
        if "history" in task:
            slim = {key: value for key, value in task.items() if key != "history"}
            trimmed = encode(result_response(response.id, {**result, "task": slim} if nested else slim))
            if len(trimmed) <= limit:
                return trimmed
    log.warning("reply of %d bytes exceeds the broker's packet limit; answering with an error", len(payload))
    message = f"reply too large for the broker: {len(payload)} bytes, at most {limit} fit in one MQTT packet"
    return encode(error_response(response.id, ErrorCode.INTERNAL_ERROR, message))
