"""The task store's bare zmqtt consumer (a2amesh.zmqtt_consumer) against the real broker: manual acknowledgements
sent in one write reach the broker, and detaching then disconnecting keeps the persistent session, so what was
not acknowledged and what is published meanwhile both come on the next connection."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import itertools
import socket
import struct
import termios
import uuid

import pytest
import zmqtt

from a2amesh.mqtt import make_client
from a2amesh.runtime import event_loop_factory
from a2amesh.zmqtt_compat import (
    GATHER_BYTES,
    TRICKLE_BYTES,
    _gather_in_socket,
    _wakes_on_low_water,
    coalesce_reads,
    next_messages,
    one_write,
    stream_transport,
)
from a2amesh.zmqtt_consumer import consumer_client, envelope_of, is_connected
from devstack.fixtures import BrokerHandle


async def test_acknowledged_messages_stay_acknowledged_and_the_session_outlives_a_detach(broker: BrokerHandle) -> None:
    client_id, topic = f"zc-{uuid.uuid4().hex[:8]}", f"test/zc/{uuid.uuid4().hex[:8]}"

    async def publish(*bodies: bytes) -> None:
        async with make_client(broker.settings, f"pub-{uuid.uuid4().hex[:6]}") as publisher:
            for body in bodies:
                await publisher.publish(topic, body, qos=1)

    async def session(expect: int, acknowledge: int, then_publish: tuple[bytes, ...] = ()) -> list[bytes]:
        """Receive `expect` messages, acknowledge the first `acknowledge` in one write, detach and disconnect."""
        client = consumer_client(broker.settings, client_id, persistent=True)
        await client.connect()
        subscription = client.subscribe(topic, qos=zmqtt.QoS.AT_LEAST_ONCE, auto_ack=False)
        await subscription.start()
        try:
            assert is_connected(client)
            await publish(*then_publish)
            received = [await asyncio.wait_for(subscription.get_message(), timeout=15) for _ in range(expect)]
            assert stream_transport(client) is not None, "zmqtt's transport moved: one_write writes one by one"
            async with one_write(client):
                for message in received[:acknowledge]:
                    await message.ack()
            await asyncio.sleep(0.3)  # the write has gone out
            return [envelope_of(message).payload for message in received]
        finally:
            await subscription.detach()
            await client.disconnect()
            assert not is_connected(client)

    assert await session(3, acknowledge=2, then_publish=(b"m0", b"m1", b"m2")) == [b"m0", b"m1", b"m2"]
    await publish(b"while away")
    assert await session(2, acknowledge=2) == [b"m2", b"while away"], "the session lost or repeated messages"


async def test_next_messages_takes_every_waiting_message_in_order_then_waits_for_the_next(broker: BrokerHandle) -> None:
    """A burst is taken at once (up to the limit, in the broker's order); with none waiting, the next to arrive."""
    topic = f"test/zc/{uuid.uuid4().hex[:8]}"
    client = consumer_client(broker.settings, f"zc-{uuid.uuid4().hex[:8]}", persistent=False)
    await client.connect()
    subscription = client.subscribe(topic, qos=zmqtt.QoS.AT_LEAST_ONCE, auto_ack=False)
    await subscription.start()
    try:
        bodies = [f"m{i}".encode() for i in range(6)]
        async with make_client(broker.settings, f"pub-{uuid.uuid4().hex[:6]}") as publisher:
            for body in bodies:
                await publisher.publish(topic, body, qos=1)
        received: list[bytes] = []
        for _ in range(len(bodies)):  # bounded: each call takes at least one message
            if len(received) == len(bodies):
                break
            taken = await asyncio.wait_for(next_messages(subscription, limit=4), timeout=15)
            assert 1 <= len(taken) <= 4
            received += [message.payload for message in taken]
        assert received == bodies
        later = asyncio.ensure_future(next_messages(subscription, limit=4))
        async with make_client(broker.settings, f"pub-{uuid.uuid4().hex[:6]}") as publisher:
            await publisher.publish(topic, b"later", qos=1)
        assert [message.payload for message in await asyncio.wait_for(later, timeout=15)] == [b"later"]
    finally:
        await subscription.detach()
        await client.disconnect()


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_coalesced_reads_wait_between_reads_of_a_trickle_and_lose_nothing(broker: BrokerHandle, loop: str) -> None:
    """With `coalesce_reads`, a read that emptied the stream is followed by one at least the pause later (what
    came meanwhile gathered for it), and a trickle of messages still arrives whole and in order; on uvloop's loop
    (the services') as on asyncio's, whose transports differ."""
    factory = event_loop_factory() if loop == "uvloop" else asyncio.new_event_loop
    assert factory is not None, "uvloop is a dependency of the shared package"
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(_coalesced_trickle(broker))


async def _coalesced_trickle(broker: BrokerHandle) -> None:
    from zmqtt._internal.transport.base import StreamTransport

    pause = 0.05
    topic = f"test/zc/{uuid.uuid4().hex[:8]}"
    zmqtt_read = StreamTransport.read
    coalesce_reads(pause)
    coalesced = StreamTransport.read
    assert coalesced is not zmqtt_read
    reads: list[tuple[float, int]] = []  # (when each read of our client returned, bytes)
    client = consumer_client(broker.settings, f"zc-{uuid.uuid4().hex[:8]}", persistent=False)

    async def recorded(self: StreamTransport, n: int) -> bytes:
        data = await coalesced(self, n)
        if self is stream_transport(client):
            reads.append((asyncio.get_running_loop().time(), len(data)))
        return data

    StreamTransport.read = recorded  # type: ignore[method-assign]
    try:
        await client.connect()
        subscription = client.subscribe(topic, qos=zmqtt.QoS.AT_LEAST_ONCE)
        await subscription.start()
        bodies = [f"m{i}".encode() for i in range(30)]
        async with make_client(broker.settings, f"pub-{uuid.uuid4().hex[:6]}") as publisher:
            for body in bodies:  # a trickle: one at a time, each acknowledged by the broker before the next
                await publisher.publish(topic, body, qos=1)
        received = [(await asyncio.wait_for(subscription.get_message(), timeout=15)).payload for _ in bodies]
        assert received == bodies
        await subscription.detach()
        await client.disconnect()
    finally:
        StreamTransport.read = coalesced  # type: ignore[method-assign]
        coalesce_reads(0)
    assert StreamTransport.read is zmqtt_read, "coalesce_reads(0) did not give zmqtt its own read back"
    gaps = [later - earlier for (earlier, size), (later, _) in itertools.pairwise(reads) if size < TRICKLE_BYTES]
    assert gaps, f"no read followed a short one: {reads}"
    assert min(gaps) >= pause - 0.005, f"a read came sooner than the pause after the one before: {gaps}"


async def test_the_lean_qos1_delivery_takes_the_usual_case_and_acknowledges_like_zmqtt(broker: BrokerHandle) -> None:
    """Messages queued by `lean_qos1_delivery` (room in the queue) and by zmqtt's own path (a full queue: the read
    waits for room) come in the broker's order, each counted against the receive maximum until acknowledged, and
    their four-byte PUBACKs, sent in one write, reach the broker: nothing comes again on the persistent session."""
    client_id, topic = f"zc-{uuid.uuid4().hex[:8]}", f"test/zc/{uuid.uuid4().hex[:8]}"
    bodies = [f"m{i}".encode() for i in range(6)]

    async def session(publish: list[bytes], expect: int) -> list[zmqtt.Message]:
        client = consumer_client(broker.settings, client_id, persistent=True)
        await client.connect()
        subscription = client.subscribe(topic, qos=zmqtt.QoS.AT_LEAST_ONCE, auto_ack=False, receive_buffer_size=2)
        await subscription.start()
        try:
            async with make_client(broker.settings, f"pub-{uuid.uuid4().hex[:6]}") as publisher:
                for body in publish:
                    await publisher.publish(topic, body, qos=1)
            received: list[zmqtt.Message] = []
            for _ in range(50):  # bounded: a few messages at a time, the queue holds two
                if len(received) >= expect:
                    break
                received += await asyncio.wait_for(next_messages(subscription, 2), timeout=15)
            await asyncio.sleep(0.3)  # anything more would be here by now
            with contextlib.suppress(TimeoutError):
                received += await asyncio.wait_for(next_messages(subscription, 10), timeout=0.3)
            flow = client._protocol.inbound  # type: ignore[union-attr]
            assert len(flow._unacknowledged) == len(received), "the receive maximum no longer counts them"
            async with one_write(client):
                for message in received:
                    await message.ack()
            assert not flow._unacknowledged, "an acknowledgement did not release its receive-maximum unit"
            await asyncio.sleep(0.3)  # the write has gone out
            return received
        finally:
            await subscription.detach()
            await client.disconnect()

    first = await session(bodies, expect=len(bodies))
    assert [message.payload for message in first] == bodies
    lean = [type(getattr(message._ack_callback, "__self__", None)).__name__ == "_PubAck" for message in first]
    assert any(lean), "no message took the lean path: zmqtt's InboundPublishFlow moved"
    again = await session([b"after"], expect=1)
    assert [message.payload for message in again] == [b"after"], "a lean PUBACK did not reach the broker"


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_a_paused_read_raises_the_sockets_low_water_mark_and_what_gathered_still_comes(
    broker: BrokerHandle, loop: str
) -> None:
    """While a coalesced read pauses, the connection's socket wakes the process only for a burst (SO_RCVLOWAT at
    GATHER_BYTES), not for every packet; afterwards the mark is 1 byte again, and a message that landed during the
    pause, far below the mark, is delivered without waiting for another packet to wake the socket."""
    if not _wakes_on_low_water():
        pytest.skip("the low-water mark is only raised on Linux 4.18 and later")
    factory = event_loop_factory() if loop == "uvloop" else asyncio.new_event_loop
    assert factory is not None, "uvloop is a dependency of the shared package"
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(_low_water_during_a_pause(broker))


async def _low_water_during_a_pause(broker: BrokerHandle) -> None:
    topic = f"test/zc/{uuid.uuid4().hex[:8]}"
    client = consumer_client(broker.settings, f"zc-{uuid.uuid4().hex[:8]}", persistent=False)
    await client.connect()
    try:
        subscription = client.subscribe(topic, qos=zmqtt.QoS.AT_LEAST_ONCE)
        await subscription.start()
        stream = stream_transport(client)
        assert stream is not None, "zmqtt's transport moved"
        transport = stream._writer.transport
        sock = transport.get_extra_info("socket")
        assert _low_water(sock) == 1
        pause = asyncio.create_task(_gather_in_socket(transport, 1.0))
        await asyncio.sleep(0.1)
        assert _low_water(sock) == GATHER_BYTES, "the socket still wakes the process for every packet"
        async with make_client(broker.settings, f"pub-{uuid.uuid4().hex[:6]}") as publisher:
            await publisher.publish(topic, b"landed during the pause", qos=1)
        for _ in range(80):  # bounded: until the message waits in the socket, below the mark (or the pause ends)
            if pause.done() or _waiting_bytes(sock):
                break
            await asyncio.sleep(0.01)
        assert not pause.done() and _waiting_bytes(sock), "the message did not land during the pause"
        await pause
        assert _low_water(sock) == 1, "the pause left the socket's low-water mark raised"
        message = await asyncio.wait_for(subscription.get_message(), timeout=15)
        assert message.payload == b"landed during the pause"
        await subscription.detach()
    finally:
        await client.disconnect()


def _low_water(sock: socket.socket) -> int:
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT)


def _waiting_bytes(sock: socket.socket) -> int:
    """Bytes received on the socket that nothing has read yet (FIONREAD)."""
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]
