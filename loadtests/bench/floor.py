"""The floor: raw MQTT 5 request/reply on aiomqtt with the mesh's message pattern and no A2A processing.

For each request the responder publishes, like a mesh agent answering SendStreamingMessage: an event then a reply,
four times (task, working, artifact, completed), QoS 1, each reply echoing the Correlation Data. Payloads are bytes
of the same shape and size as the echo agent's (the request embedded where the echo agent embeds the message);
nothing is parsed. `python -m loadtests.bench.floor <request topic> <event topic>` runs the responder (broker and
credentials from MESH_MQTT__*); `FloorClient` is the requester side, used in the benchmark process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import sys

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from a2amesh.mqtt import make_client
from a2amesh.runtime import run_on_service_loop
from a2amesh.settings import MqttSettings, ServiceSettings

REPLIES_PER_TASK = 4
_STAMP = b'"timestamp":"2026-01-01T00:00:00.000000Z"'
_TASK = b'"id":"00000000-0000-4000-8000-000000000000","contextId":"00000000-0000-4000-8000-000000000001"'


def _replies(request: bytes) -> list[bytes]:
    """The four stream items, JSON-RPC wrapped, with the request where the echo agent puts the message."""
    head = b'{"jsonrpc":"2.0","id":"floor","result":'
    task = b'{"task":{' + _TASK + b',"status":{"state":"TASK_STATE_SUBMITTED",' + _STAMP + b'},"history":['
    status = b'{"statusUpdate":{"taskId":"00000000-0000-4000-8000-000000000000","contextId":"x","status":{"state":'
    return [
        head + task + request + b"]}}}",
        head + status + b'"TASK_STATE_WORKING",' + _STAMP + b"}}}}",
        head
        + b'{"artifactUpdate":{"taskId":"t","contextId":"c","artifact":{"artifactId":"'
        + secrets.token_hex(16).encode()
        + b'","name":"echo","parts":['
        + request
        + b"]}}}}",
        head + status + b'"TASK_STATE_COMPLETED",' + _STAMP + b"}}}}",
    ]


async def _answer(client: aiomqtt.Client, message: aiomqtt.Message, event_topic: str) -> None:
    properties = message.properties
    response_topic = getattr(properties, "ResponseTopic", None)
    correlation = getattr(properties, "CorrelationData", None)
    if not response_topic or correlation is None:
        return
    reply_properties = Properties(PacketTypes.PUBLISH)
    reply_properties.CorrelationData = correlation
    reply_properties.ContentType = "application/json"
    event_properties = Properties(PacketTypes.PUBLISH)
    event_properties.ContentType = "application/json"
    for payload in _replies(bytes(message.payload) if isinstance(message.payload, bytes | bytearray) else b"{}"):
        await client.publish(event_topic, payload, qos=1, properties=event_properties)
        await client.publish(response_topic, payload, qos=1, properties=reply_properties)


async def serve(settings: MqttSettings, request_topic: str, event_topic: str) -> None:
    """Answer requests until SIGTERM: read messages as they come, answer each in its own task."""
    running: set[asyncio.Task[None]] = set()
    async with make_client(settings, f"floor-responder-{os.getpid()}") as client:
        await client.subscribe(request_topic, qos=1)

        async def consume() -> None:
            async for message in client.messages:
                job = asyncio.create_task(_answer(client, message, event_topic))
                running.add(job)
                job.add_done_callback(running.discard)

        consumer = asyncio.create_task(consume())
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, consumer.cancel)
        print("ready", flush=True)
        with contextlib.suppress(asyncio.CancelledError):
            await consumer
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.gather(*running, return_exceptions=True), timeout=5)


class FloorClient:
    """The requester of the floor: one connection, one reply topic, a future per request."""

    def __init__(self, settings: MqttSettings, request_topic: str) -> None:
        self.request_topic = request_topic
        self.reply_topic = f"bench/floor/reply/{secrets.token_hex(8)}"
        self._waiting: dict[bytes, tuple[asyncio.Future[None], list[int]]] = {}
        self._mqtt = make_client(settings, f"floor-requester-{secrets.token_hex(4)}")
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> FloorClient:
        await self._mqtt.__aenter__()
        await self._mqtt.subscribe(self.reply_topic, qos=1)
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await self._mqtt.__aexit__(None, None, None)

    async def _read(self) -> None:
        async for message in self._mqtt.messages:
            correlation = getattr(message.properties, "CorrelationData", None)
            entry = self._waiting.get(bytes(correlation)) if correlation is not None else None
            if entry is None:
                continue
            future, count = entry
            count[0] += 1
            if count[0] >= REPLIES_PER_TASK and not future.done():
                future.set_result(None)

    async def request(self, payload: bytes) -> None:
        """Publish one request and wait for its fourth reply."""
        correlation = secrets.token_hex(16).encode()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[correlation] = (future, [0])
        properties = Properties(PacketTypes.PUBLISH)
        properties.ResponseTopic = self.reply_topic
        properties.CorrelationData = correlation
        properties.ContentType = "application/json"
        try:
            await self._mqtt.publish(self.request_topic, payload, qos=1, properties=properties)
            await asyncio.wait_for(future, timeout=30)
        finally:
            self._waiting.pop(correlation, None)


def main(argv: list[str] | None = None) -> None:
    request_topic, event_topic = (argv or sys.argv[1:])[:2]
    run_on_service_loop(serve(ServiceSettings().mqtt, request_topic, event_topic))


if __name__ == "__main__":
    main()
