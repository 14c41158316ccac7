"""Every place the mesh relies on internals of zmqtt (FastStream's MQTT client, which the task store also drives
directly: `a2amesh.zmqtt_consumer`), in this one module, each with the reason and the versions it was verified with,
as `a2amesh.mqtt_compat` does for aiomqtt and paho. It imports neither of those, so the task store does not load
them. uv.lock pins zmqtt (FastStream bounds it below 0.3), shared/tests/test_mqtt_compat.py fails loudly (naming
this module) if an upgrade breaks any of them, and `lean_qos1_delivery`, whose failure would stall the consumer
rather than fall back, is not installed at all on a zmqtt version it was not verified with.

- zmqtt (FastStream's MQTT client) sends each PUBACK as its own TLS write and drain (`StreamTransport.write`), which
  was a fifth of the task store's CPU: `one_write` collects the packets a block writes and sends them in one, by
  shadowing the connection's transport `write` (`client._protocol._transport`, private) for that block. It takes
  a FastStream broker or a bare zmqtt client (the task store's, `a2amesh.zmqtt_consumer`).
- zmqtt matches every incoming PUBLISH against its subscription tree anew (`SubscriptionIndex.select`: a tree walk,
  a filter match and a sort by specificity), which was a tenth of the task store's CPU although its events come on
  a few hundred topics: `memoize_subscription_selection` remembers the selection per topic, forgotten whenever a
  subscription is added or removed (the index's `add`, `remove` and `clear`; `add_many` goes through `add`).
- zmqtt's `Subscription.get_message` races the subscription's queue against the client's failure signal with a
  new task, `asyncio.wait` and `gather` for every message, which was a tenth of the task store's CPU: `next_messages`
  takes the messages already waiting in that queue (`Subscription._queue`, private) at once, and calls
  `get_message` only when none is, so a burst costs one wait, not one per message.
- zmqtt decodes a PUBLISH generically (`codec._decode_publish`: a dictionary of properties keyed by an enum, built
  and then read back field by field, an enum call for the QoS, a copy per string), about half of the task store's
  packet decoding: `lean_publish_decoding` puts in a decoder that builds the same packet straight from the bytes
  (`codec._decode_publish`, private, which `codec.decode` looks up at each call). What it does not expect (a
  malformed or truncated packet, a property a PUBLISH may not carry) it hands to zmqtt's decoder, so such packets
  fail exactly as they always have.
- zmqtt reads the stream as soon as anything arrives, 4 KiB at most: at the mesh's pace that is a wakeup of the
  event loop, a TLS read and a pass of zmqtt's read loop for every three events or so, about a fifth of the task
  store's CPU. `coalesce_reads` has a read that emptied the stream wait a few milliseconds (its transport paused
  through the public `pause_reading` of asyncio's and uvloop's transports) before the next, so that each pass
  takes a dozen events or more (`StreamTransport.read` and its private `_writer`). A paused TLS transport still
  drains its socket into the TLS buffer as each packet lands, so for the pause the socket's low-water mark
  (SO_RCVLOWAT, through the public `get_extra_info("socket")`) is raised too: the kernel then wakes the process
  once a pause, not once a packet.
- zmqtt hands each incoming QoS 1 PUBLISH down a chain of about ten coroutines (`InboundPublishFlow.handle_publish`
  through the replay state's `accept` to `_deliver`'s `queue.put`), and sends each manual PUBACK through four more
  and a generic encoder: about 6 µs an event, a twentieth of the task store's CPU. `lean_qos1_delivery` has the
  usual case (QoS 1, a manually acknowledged subscription with room in its queue, no session replay held, no
  request waiting for it) queued in one plain step, acknowledged by writing the four bytes of a PUBACK; anything
  else goes down zmqtt's own path (`InboundPublishFlow` and its `_replay`, `_unacknowledged`, `_receive_maximum`,
  `_request_router`, `_connection`, all private)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import platform
import socket
import sys
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # FastStream and zmqtt are the `faststream` extra's: imported only where used
    import zmqtt
    from faststream.mqtt import MQTTBroker
    from zmqtt._internal.transport.base import StreamTransport

log = logging.getLogger(__name__)

VERIFIED_WITH = {"zmqtt": ("0.2.5",)}
"""Versions every workaround here was verified with (shared/tests/test_mqtt_compat.py checks the installed one)."""


def stream_transport(broker: MQTTBroker | zmqtt.MQTTClient) -> StreamTransport | None:
    """The TLS/TCP stream zmqtt writes the packets of `broker` (a FastStream broker or a zmqtt client) to, or None
    (not connected, or zmqtt no longer keeps one where this module looks: callers then write packet by packet, as
    zmqtt does)."""
    from zmqtt._internal.transport.base import StreamTransport  # here: the faststream extra may be absent

    config = getattr(broker, "config", None)
    client = getattr(config, "client", None) if config is not None else broker
    transport = getattr(getattr(client, "_protocol", None), "_transport", None)
    return transport if isinstance(transport, StreamTransport) else None


@contextlib.asynccontextmanager
async def one_write(broker: MQTTBroker | zmqtt.MQTTClient) -> AsyncIterator[None]:
    """Every packet `broker`'s connection writes inside the block (the PUBACKs of a batch) goes out in one write at
    its end, in order. Meant for a block that does not wait on the network: its writes only queue until the end."""
    transport = stream_transport(broker)
    if transport is None:
        yield
        return
    chunks: list[bytes] = []
    write = transport.write

    async def collect(data: bytes) -> None:
        chunks.append(data)

    transport.write = collect  # type: ignore[method-assign]
    try:
        yield
    finally:
        del transport.write  # the class's method again
        if chunks:
            await write(b"".join(chunks))


SELECTION_CACHE_SIZE = 4096
"""Topics whose subscription selection is remembered at most (then the memory starts again)."""


def memoize_subscription_selection() -> None:
    """Make zmqtt remember, per topic, which subscription a PUBLISH goes to (see the module's docstring). The
    selection depends only on the topic and the set of subscriptions, so it is forgotten whenever that set changes.
    Idempotent; a process-wide patch of zmqtt's `SubscriptionIndex`, whose instances (one per connection) are not
    reachable before they route their first message."""
    from zmqtt._internal.subscription_index import SubscriptionIndex  # here: the faststream extra may be absent

    if getattr(SubscriptionIndex, "_mesh_memoized", False):
        return
    select, add, remove, clear = (
        SubscriptionIndex.select,
        SubscriptionIndex.add,
        SubscriptionIndex.remove,
        SubscriptionIndex.clear,
    )

    def selections(index: SubscriptionIndex) -> dict[str, Any]:
        memo: dict[str, Any] | None = index.__dict__.get("_mesh_selections")
        if memo is None:
            memo = index.__dict__["_mesh_selections"] = {}
        return memo

    def memoized_select(self: SubscriptionIndex, topic: str) -> Any:
        memo = selections(self)
        selection = memo.get(topic)
        if selection is None:
            if len(memo) >= SELECTION_CACHE_SIZE:
                memo.clear()
            selection = memo[topic] = select(self, topic)
        return selection

    def forgetting(method: Callable[..., Any]) -> Callable[..., Any]:
        def changed(self: SubscriptionIndex, *args: Any) -> Any:
            selections(self).clear()
            return method(self, *args)

        return changed

    SubscriptionIndex.select = memoized_select  # type: ignore[method-assign]
    SubscriptionIndex.add = forgetting(add)  # type: ignore[method-assign]
    SubscriptionIndex.remove = forgetting(remove)  # type: ignore[method-assign]
    SubscriptionIndex.clear = forgetting(clear)  # type: ignore[method-assign]
    SubscriptionIndex._mesh_memoized = True  # type: ignore[attr-defined]


async def next_messages(subscription: zmqtt.Subscription, limit: int) -> list[zmqtt.Message]:
    """The messages waiting on a zmqtt subscription (at most `limit`, in order), or the next one to arrive when
    none is waiting. Raises as `get_message` does once the subscription is detached or the client has failed."""
    queue = getattr(subscription, "_queue", None)
    if not isinstance(queue, asyncio.Queue) or queue.empty() or subscription._detached:
        return [await subscription.get_message()]  # zmqtt's own path: waits, and raises what it raises
    failure = subscription._client._subscription_failure
    if failure is not None and failure.done():
        raise failure.result()
    taken = [queue.get_nowait() for _ in range(min(limit, queue.qsize()))]
    await subscription._notify_capacity_available()  # as get_message does: room for messages zmqtt holds back
    return taken


READ_SIZE = 1 << 16
"""Bytes a coalesced read takes from the stream at most (zmqtt asks for 4 KiB: a handful of events)."""
TRICKLE_BYTES = 1 << 14
"""A read shorter than this emptied the stream: events are trickling in, so the next read waits for more."""
GATHER_BYTES = 1 << 15
"""The socket's low-water mark while a read pauses: the kernel wakes the process before the pause ends only once
this much has gathered (a burst), instead of for every packet (a trickle); it is 1 byte again after the pause."""


def coalesce_reads(pause: float) -> None:
    """Make every zmqtt connection of this process let a trickle of messages gather before reading on (see the
    module's docstring): after a read that emptied the stream, the connection stops reading for `pause` seconds
    (the transport's own `pause_reading`, and the socket's low-water mark raised so that packets landing meanwhile
    do not wake the process), then takes what gathered in one read. Reads that fill `TRICKLE_BYTES` or more
    (a backlog) are followed without a pause. 0 restores zmqtt's read.

    Process-wide (zmqtt's `StreamTransport.read`: a reconnect makes a new transport): for a process whose every
    zmqtt connection is a consumer that may take its messages up to `pause` late, such as the task store."""
    from zmqtt._internal.transport.base import StreamTransport  # here: the faststream extra may be absent

    read = StreamTransport.__dict__.get("_mesh_zmqtt_read") or StreamTransport.read
    StreamTransport._mesh_zmqtt_read = read  # type: ignore[attr-defined]
    if pause <= 0:
        StreamTransport.read = read  # type: ignore[method-assign]
        return

    async def coalescing_read(self: StreamTransport, n: int) -> bytes:
        if self.__dict__.get("_mesh_trickle"):
            await _gather_in_socket(self._writer.transport, pause)
        data = await read(self, max(n, READ_SIZE))
        self._mesh_trickle = len(data) < TRICKLE_BYTES  # type: ignore[attr-defined]
        return data

    StreamTransport.read = coalescing_read  # type: ignore[method-assign]


async def _gather_in_socket(transport: Any, pause: float) -> None:
    """Stop reading `transport` for `pause` seconds, unless it is closing or already paused (the stream's own
    flow control: then it is not ours to resume)."""
    # by behaviour, not type: uvloop's transports (the services' loop) are not asyncio.ReadTransport subclasses
    if not hasattr(transport, "is_reading") or transport.is_closing() or not transport.is_reading():
        return
    sock = transport.get_extra_info("socket") if _wakes_on_low_water() else None
    transport.pause_reading()
    try:
        _set_low_water(sock, GATHER_BYTES)
        await asyncio.sleep(pause)
    finally:
        try:  # lowered even on a closing transport: its TLS close_notify is a small record that must still wake us
            _set_low_water(sock, 1)
        finally:
            if not transport.is_closing():
                transport.resume_reading()


def _set_low_water(sock: Any, size: int) -> None:
    """Set the socket's SO_RCVLOWAT, Linux's default being 1 (nothing else in the process sets it). A socket closed
    meanwhile has none to set: its transport reports the close."""
    if sock is not None and hasattr(sock, "setsockopt"):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, size)


@functools.cache
def _wakes_on_low_water() -> bool:
    """Whether lowering SO_RCVLOWAT wakes a poller for what already waits below the old mark: Linux since 4.18
    (`tcp_set_rcvlowat`). Elsewhere the bytes that gathered during a pause could wait for the next packet, so the
    mark is left alone there."""
    if sys.platform != "linux" or not hasattr(socket, "SO_RCVLOWAT"):
        return False
    try:
        major, minor = (int(part) for part in platform.release().split(".")[:2])
    except ValueError:
        return False
    return (major, minor) >= (4, 18)


_PUBLISH_PROPERTY_FIELDS = {
    0x01: "payload_format_indicator",
    0x02: "message_expiry_interval",
    0x03: "content_type",
    0x08: "response_topic",
    0x09: "correlation_data",
    0x0B: "subscription_identifier",
    0x23: "topic_alias",
}
"""The properties a PUBLISH may carry besides User Properties (0x26), by identifier (MQTT 5, 3.3.2.3)."""


def lean_publish_decoding() -> None:
    """Decode every PUBLISH of this process's zmqtt connections with `_decode_publish_lean` (see the module's
    docstring). Idempotent."""
    from zmqtt._internal.packets import codec  # here: the faststream extra may be absent

    if codec._decode_publish is not _decode_publish_lean:
        _ZMQTT["decode_publish"] = codec._decode_publish
        _ZMQTT["qos"] = tuple(codec.QoS)
        _ZMQTT["publish"] = codec.Publish
        _ZMQTT["properties"] = codec.decode_publish_properties.__globals__["PublishProperties"]
        codec._decode_publish = _decode_publish_lean  # type: ignore[attr-defined]


_ZMQTT: dict[str, Any] = {}
"""zmqtt's own PUBLISH decoder, its QoS levels by value and the packet classes, once `lean_publish_decoding` ran;
its own `handle_publish`, QoS 1, message class and plain replay states, once `lean_qos1_delivery` ran."""


def _decode_publish_lean(buf: bytes | memoryview, flags: int, version: str) -> Any:
    """A PUBLISH body decoded as zmqtt's `_decode_publish` would, for a well-formed packet; zmqtt's own decoder
    for anything else, so that malformed packets fail as they always have."""
    body = bytes(buf)
    try:
        qos = _ZMQTT["qos"][(flags >> 1) & 0x03]
        end = 2 + ((body[0] << 8) | body[1])
        topic = body[2:end].decode()
        pos = end
        packet_id = None
        if qos:
            packet_id = (body[pos] << 8) | body[pos + 1]
            pos += 2
        properties = None
        if version == "5.0":
            fields, pos = _publish_properties(body, pos)
            if fields:
                properties = _ZMQTT["properties"](**fields)
        if end > len(body) or pos > len(body):
            raise ValueError("truncated")
    except (ValueError, IndexError):  # malformed: zmqtt's decoder says how, as it always has
        return _ZMQTT["decode_publish"](buf, flags, version)
    return _ZMQTT["publish"](
        topic=topic,
        payload=body[pos:],
        qos=qos,
        retain=bool(flags & 0x01),
        dup=bool(flags & 0x08),
        packet_id=packet_id,
        properties=properties,
    )


def _variable_byte_integer(body: bytes, pos: int) -> tuple[int, int]:
    """The MQTT variable byte integer at `pos` (one to four bytes) and the position after it."""
    value, shift = 0, 0
    while True:
        byte = body[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 21:
            raise ValueError("a variable byte integer over four bytes")


def _publish_properties(body: bytes, pos: int) -> tuple[dict[str, Any], int]:
    """The properties block at `pos` as PublishProperties' fields, and the position after it. Raises ValueError
    for anything but a well-formed block of PUBLISH properties."""
    length, pos = _variable_byte_integer(body, pos)
    end = pos + length
    fields: dict[str, Any] = {}
    pairs: list[tuple[str, str]] = []
    while pos < end:
        identifier = body[pos]
        pos += 1
        if identifier == 0x26:  # User Property: two strings
            size = (body[pos] << 8) | body[pos + 1]
            key = body[pos + 2 : pos + 2 + size].decode()
            pos += 2 + size
            size = (body[pos] << 8) | body[pos + 1]
            pairs.append((key, body[pos + 2 : pos + 2 + size].decode()))
            pos += 2 + size
            continue
        name = _PUBLISH_PROPERTY_FIELDS.get(identifier)
        if name is None:
            raise ValueError(f"not a PUBLISH property: {identifier:#04x}")
        if identifier == 0x01:
            fields[name] = body[pos]
            pos += 1
        elif identifier == 0x02:
            fields[name] = int.from_bytes(body[pos : pos + 4], "big")
            pos += 4
        elif identifier == 0x23:
            fields[name] = (body[pos] << 8) | body[pos + 1]
            pos += 2
        elif identifier == 0x0B:
            fields[name], pos = _variable_byte_integer(body, pos)
        else:  # a string (content type, response topic) or binary data (correlation data)
            size = (body[pos] << 8) | body[pos + 1]
            value = body[pos + 2 : pos + 2 + size]
            fields[name] = value if identifier == 0x09 else value.decode()
            pos += 2 + size
    if pos != end:
        raise ValueError("properties overrun their length")
    if pairs:
        fields["user_properties"] = tuple(pairs)
    return fields, pos


def lean_qos1_delivery() -> None:
    """Deliver the usual QoS 1 PUBLISH of this process's zmqtt connections with `_handle_publish_lean` (see the
    module's docstring). Idempotent. Not on a zmqtt version other than VERIFIED_WITH's: a moved private name there
    would fail every PUBLISH in the read loop, and the consumer would restart on the same message for ever; zmqtt's
    own delivery is then kept, with a warning."""
    from importlib.metadata import version

    from zmqtt._internal import inbound  # here: the faststream extra may be absent

    installed = version("zmqtt")
    if installed not in VERIFIED_WITH["zmqtt"]:
        log.warning("zmqtt %s is not one lean_qos1_delivery was verified with; zmqtt delivers as it does", installed)
        return
    flow = inbound.InboundPublishFlow
    if flow.handle_publish is not _handle_publish_lean:
        _ZMQTT["handle_publish"] = flow.handle_publish
        _ZMQTT["at_least_once"] = inbound.QoS.AT_LEAST_ONCE
        _ZMQTT["message"] = inbound.Message
        _ZMQTT["plain_replay"] = (inbound._NoSessionReplay, inbound._PersistentReplayIdle)
        flow.handle_publish = _handle_publish_lean  # type: ignore[method-assign]


async def _handle_publish_lean(flow: Any, packet: Any) -> None:
    """Queue a QoS 1 PUBLISH for its manually acknowledged subscription as zmqtt's `handle_publish` would (the
    same receive-maximum count, the same message, the same queue), without its chain of coroutines; zmqtt's own
    path for every other case, so that each still behaves as it always has."""
    packet_id = packet.packet_id
    properties = packet.properties
    if (
        packet.qos is not _ZMQTT["at_least_once"]
        or packet_id is None
        or packet_id in flow._unacknowledged  # a redelivery still unacknowledged: zmqtt knows what to do
        or type(flow._replay) not in _ZMQTT["plain_replay"]  # messages held for a subscription to come
        or (flow._request_router is not None and properties is not None and properties.correlation_data is not None)
    ):
        return await _ZMQTT["handle_publish"](flow, packet)
    selection = flow._select_subscription(packet)
    recipient = selection.recipient
    if recipient is None or selection.identifier_missing or selection.tied_filters:
        return await _ZMQTT["handle_publish"](flow, packet)  # zmqtt warns, or buffers for the session
    entry = recipient[1]
    queue = entry.queue
    limit = flow._receive_maximum
    if entry.auto_ack or entry.detached or queue.full() or (limit is not None and len(flow._unacknowledged) >= limit):
        return await _ZMQTT["handle_publish"](flow, packet)  # waits for room, or refuses the broker's excess
    flow._unacknowledged.add(packet_id)
    message = _ZMQTT["message"](
        topic=packet.topic, payload=packet.payload, qos=packet.qos, retain=packet.retain, properties=properties
    )
    message._ack_callback = _PubAck(flow, packet_id).send
    queue.put_nowait(message)
    return None


class _PubAck:
    """The acknowledgement of one message `_handle_publish_lean` delivered: `Message.ack` calls it once at most."""

    __slots__ = ("flow", "packet_id")

    def __init__(self, flow: Any, packet_id: int) -> None:
        self.flow = flow
        self.packet_id = packet_id

    async def send(self) -> None:
        """A PUBACK with success and no properties, as zmqtt encodes it (the same four bytes in MQTT 3.1.1 and 5),
        released from the receive maximum first, as zmqtt's `_complete` does."""
        packet_id = self.packet_id
        self.flow._unacknowledged.discard(packet_id)
        await self.flow._connection._send(bytes((0x40, 0x02, packet_id >> 8, packet_id & 0xFF)))
