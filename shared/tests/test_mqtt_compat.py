"""The workarounds in a2amesh.mqtt_compat and a2amesh.zmqtt_compat still work with the installed aiomqtt, paho and
zmqtt, against the real broker.
An upgrade that breaks one fails here by name, rather than as a lost event or a hung consumer elsewhere."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from importlib.metadata import version
from typing import ClassVar

import paho.mqtt.client as paho
from faststream import AckPolicy
from faststream.mqtt import MQTTMessage

from a2amesh import mqtt_compat, zmqtt_compat
from a2amesh.mqtt import Envelope, MqttLink, make_client
from a2amesh.mqtt_compat import connection_lost, paho_client
from a2amesh.settings import MqttSettings
from a2amesh.subscribers import mqtt_broker, stop_keeping_session, the_message
from a2amesh.zmqtt_compat import lean_publish_decoding, memoize_subscription_selection, one_write, stream_transport
from devstack.fixtures import BrokerHandle


def test_lean_pubacks_are_the_bytes_zmqtt_writes() -> None:
    """`lean_qos1_delivery` acknowledges with four bytes of its own: zmqtt's encoder writes the same for a
    successful PUBACK, in MQTT 5 and 3.1.1, for any packet id."""
    from zmqtt._internal.packets import codec

    written: list[bytes] = []

    class Connection:
        async def _send(self, data: bytes) -> None:
            written.append(data)

    class Flow:
        _unacknowledged: ClassVar[set[int]] = {1, 256, 65535}
        _connection = Connection()

    for packet_id in (1, 256, 65535):
        asyncio.run(zmqtt_compat._PubAck(Flow(), packet_id).send())
        for mqtt_version in ("5.0", "3.1.1"):
            assert written[-1] == codec.encode(codec.PubAck(packet_id=packet_id), version=mqtt_version)
    assert Flow._unacknowledged == set(), "each ack releases its packet id from the receive maximum"


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


def _publish_packets() -> list[tuple[bytes, str]]:
    """PUBLISH packets as zmqtt encodes them: each QoS, retain and dup, with no properties, the mesh's User
    Properties, and every property a PUBLISH may carry (non-ASCII text too), in MQTT 3.1.1 and 5."""
    from zmqtt._internal.packets import codec
    from zmqtt._internal.packets.properties import PublishProperties
    from zmqtt._internal.packets.publish import Publish
    from zmqtt._internal.types.qos import QoS

    variants = (
        None,
        PublishProperties(user_properties=(("a2a-event-id", "e-1"), ("a2a-task-agent", "acme/default/echo"))),
        PublishProperties(
            payload_format_indicator=1,
            message_expiry_interval=300,
            topic_alias=3,
            response_topic="r/t",
            correlation_data=b"\x00\x01",
            subscription_identifier=200_000,
            content_type="application/json",
            user_properties=(("k", "v"), ("k", "v2"), ("\u00fc", "\u00e9")),
        ),
    )
    packets = []
    for qos in QoS:
        for properties in variants:
            for mqtt_version in ("3.1.1", "5.0"):
                publish = Publish(
                    topic="$a2a/v1/event/acme/default/\u00e9cho",
                    payload=b'{"task": {}}' * 30,
                    qos=qos,
                    retain=qos is QoS.AT_LEAST_ONCE,
                    dup=qos is QoS.EXACTLY_ONCE,
                    packet_id=None if qos is QoS.AT_MOST_ONCE else 513,
                    properties=properties if mqtt_version == "5.0" else None,
                )
                packets.append((codec.encode(publish, version=mqtt_version), mqtt_version))
    return packets


def _decoded(packet: bytes, mqtt_version: str) -> object:
    """What zmqtt's `codec.decode` makes of `packet`: the packet and its length, or the error it raises."""
    from zmqtt._internal.packets import codec

    try:
        return codec.decode(packet, version=mqtt_version)  # type: ignore[arg-type]
    except Exception as error:  # the error is what is compared
        return (type(error), str(error))


def test_the_lean_publish_decoder_builds_what_zmqtts_own_builds() -> None:
    """Every well-formed PUBLISH decodes to the very packet zmqtt's decoder makes, and a malformed one fails with
    zmqtt's own error: truncated strings and properties, a property a PUBLISH may not carry, QoS 3, bad UTF-8."""
    from zmqtt._internal.packets import codec

    lean_publish_decoding()
    lean = codec._decode_publish
    lean_publish_decoding()  # idempotent: zmqtt's decoder is kept, not the lean one
    assert codec._decode_publish is lean
    zmqtt_decoder = zmqtt_compat._ZMQTT["decode_publish"]
    assert zmqtt_decoder is not lean and zmqtt_decoder.__module__ == codec.__name__
    packets = _publish_packets()
    well_formed = len(packets)
    first, mqtt_version = packets[len(packets) - 1]  # QoS 2 with every property, MQTT 5
    header = 1 + next(i for i in range(1, 5) if not first[i] & 0x80)
    body = bytearray(first[header:])
    topic_end = 2 + int.from_bytes(body[:2], "big")
    properties_at = topic_end + 2  # after the packet id
    broken = {
        "topic longer than the packet": bytes(body[:1]) + b"\xff" + bytes(body[2:]),
        "not UTF-8": bytes(body[:2]) + b"\xff" + bytes(body[3:]),
        "a CONNECT property": bytes(body[: properties_at + 1]) + b"\x11" + bytes(body[properties_at + 2 :]),
        "properties overrun": bytes(body[:properties_at]) + b"\xff\x7f" + bytes(body[properties_at + 1 :]),
        "no packet id": bytes(body[:topic_end]),
    }
    for mangled in broken.values():
        remaining = len(mangled)
        length = bytes([remaining & 0x7F | 0x80, remaining >> 7]) if remaining > 127 else bytes([remaining])
        packets.append((bytes([first[0]]) + length + mangled, mqtt_version))
    packets.append((bytes([0x36, 0x03, 0x00, 0x01, 0x74]), "5.0"))  # QoS 3
    errors = 0
    for index, (packet, packet_version) in enumerate(packets):
        with_lean = _decoded(packet, packet_version)
        codec._decode_publish = zmqtt_decoder
        try:
            with_zmqtt = _decoded(packet, packet_version)
        finally:
            codec._decode_publish = lean
        assert with_lean == with_zmqtt, f"packet {index} ({'well-formed' if index < well_formed else 'malformed'})"
        errors += isinstance(with_zmqtt, tuple) and isinstance(with_zmqtt[0], type)
    assert errors >= 4, "the malformed packets no longer exercise zmqtt's errors"
