"""The workarounds in a2amesh.mqtt_compat and a2amesh.zmqtt_compat still work with the installed aiomqtt, paho and
zmqtt, against the real broker.
An upgrade that breaks one fails here by name, rather than as a lost event or a hung consumer elsewhere."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from importlib.metadata import version

import paho.mqtt.client as paho
from faststream import AckPolicy
from faststream.mqtt import MQTTMessage

from a2amesh import mqtt_compat, zmqtt_compat
from a2amesh.mqtt import Envelope, MqttLink, make_client
from a2amesh.mqtt_compat import connection_lost, paho_client
from a2amesh.settings import MqttSettings
from a2amesh.subscribers import mqtt_broker, stop_keeping_session, the_message
from a2amesh.zmqtt_compat import memoize_subscription_selection, one_write, stream_transport
from devstack.fixtures import BrokerHandle


def test_installed_versions_are_the_verified_ones() -> None:
    for module in (mqtt_compat, zmqtt_compat):
        for package, verified in module.VERIFIED_WITH.items():
            installed = version(package)
            assert installed in verified, (
                f"{package} {installed} is not among the versions {module.__name__} was verified with {verified}: "
                "run shared/tests/test_mqtt_compat.py and test_mqtt_properties.py, then add it to VERIFIED_WITH"
            )


def test_the_task_stores_consumer_loads_neither_aiomqtt_nor_paho() -> None:
    """The store consumes through zmqtt alone; importing aiomqtt and paho would cost it 4.4 MB of idle memory."""
    code = (
        "import sys, mesh_taskstore.__main__; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('aiomqtt', 'paho')))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert loaded.stdout.strip() == "[]", f"the task store imports {loaded.stdout.strip()}"


async def test_aiomqtt_still_wraps_a_paho_client() -> None:
    assert isinstance(paho_client(make_client(MqttSettings(), "compat-unconnected")), paho.Client)


async def test_connection_lost_resolves_when_the_broker_drops_the_client(broker: BrokerHandle) -> None:
    client_id = f"compat-{uuid.uuid4().hex[:8]}"
    async with make_client(broker.settings, client_id) as client:
        lost = connection_lost(client)
        assert lost is not None, "aiomqtt no longer has the _disconnected future a2amesh.mqtt_compat relies on"
        assert not lost.done()
        async with make_client(broker.settings, client_id):  # the same client id: the broker drops the first
            await asyncio.wait({lost}, timeout=15)  # it resolves with the reason as its exception
        assert lost.done()


async def test_manual_ack_holds_back_the_puback_until_acknowledged(broker: BrokerHandle) -> None:
    """A message not acknowledged comes again on the persistent session; one acknowledged does not."""
    client_id, topic = f"compat-{uuid.uuid4().hex[:8]}", f"test/compat/{uuid.uuid4().hex[:8]}"

    async def session(publish: list[bytes], acknowledged: bytes | None, expect: int) -> list[bytes]:
        received: list[bytes] = []

        async def handle(envelope: Envelope) -> None:
            received.append(envelope.payload)
            if envelope.payload == acknowledged:
                envelope.ack()

        stop = asyncio.Event()
        link = MqttLink(broker.settings, client_id, [topic], handle, persistent=True, manual_ack=True)
        running = asyncio.create_task(link.run(stop))
        try:
            await asyncio.wait_for(link.connected.wait(), timeout=15)
            for body in publish:
                await link.publish(topic, body)
            deadline = asyncio.get_running_loop().time() + 15
            while len(received) < expect and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)  # anything more would be here by now (and the ack has gone out)
            return received
        finally:
            stop.set()
            await running

    assert await session([b"m0", b"m1"], acknowledged=b"m0", expect=2) == [b"m0", b"m1"]
    redelivered = await session([], acknowledged=b"m1", expect=1)
    assert redelivered == [b"m1"], "manual ack did not hold back the PUBACK of the unacknowledged message"


async def test_one_write_sends_a_batch_of_pubacks_that_the_broker_takes(broker: BrokerHandle) -> None:
    """Acknowledgements collected by `one_write` reach the broker: acknowledged messages do not come again on the
    persistent session, and the fast path (one write on zmqtt's transport) is the one taken."""
    client_id, topic = f"compat-{uuid.uuid4().hex[:8]}", f"test/compat/{uuid.uuid4().hex[:8]}"

    async def session(publish: list[bytes], expect: int) -> list[bytes]:
        received: list[MQTTMessage] = []
        consumer = mqtt_broker(broker.settings, client_id, persistent=True, graceful_timeout=1.0)
        consumer.subscriber(topic, qos=1, ack_policy=AckPolicy.MANUAL, decoder=the_message)(received.append)
        await consumer.start()
        try:
            async with make_client(broker.settings, f"pub-{uuid.uuid4().hex[:6]}") as publisher:
                for body in publish:
                    await publisher.publish(topic, body, qos=1)
            deadline = asyncio.get_running_loop().time() + 15
            while len(received) < expect and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            assert stream_transport(consumer) is not None, "zmqtt's transport moved: one_write writes one by one"
            async with one_write(consumer):
                for message in received:
                    await message.ack()
            await asyncio.sleep(0.3)  # the write has gone out
            return [message.body for message in received]
        finally:
            await stop_keeping_session(consumer)

    bodies = [f"m{i}".encode() for i in range(5)]
    assert await session(bodies, expect=len(bodies)) == bodies
    assert await session([b"after"], expect=1) == [b"after"], "a PUBACK written by one_write did not arrive"


def test_memoized_subscription_selection_follows_the_subscriptions() -> None:
    """The remembered selection is zmqtt's own, and is forgotten when a subscription is added or removed."""
    from zmqtt._internal.subscription_index import SubscriptionEntry, SubscriptionIndex

    memoize_subscription_selection()
    memoize_subscription_selection()  # idempotent: not wrapped twice
    assert getattr(SubscriptionIndex, "_mesh_memoized", False), "zmqtt's SubscriptionIndex is not memoized"
    index = SubscriptionIndex()
    topic = "$a2a/v1/event/acme/default/echo"
    index.add("$a2a/v1/event/#", SubscriptionEntry(queue=asyncio.Queue()))
    assert index.select(topic).recipient is not None
    assert index.select(topic).recipient[0] == "$a2a/v1/event/#"  # type: ignore[index]
    index.add("$a2a/v1/event/acme/#", SubscriptionEntry(queue=asyncio.Queue()))
    assert index.select(topic).recipient[0] == "$a2a/v1/event/acme/#"  # type: ignore[index]  # the more specific
    index.remove("$a2a/v1/event/acme/#")
    assert index.select(topic).recipient[0] == "$a2a/v1/event/#"  # type: ignore[index]
    assert index.select("$a2a/v1/owner/acme/default/coordinator").recipient is None
    index.clear()
    assert index.select(topic).recipient is None
