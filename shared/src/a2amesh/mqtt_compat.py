"""Every place the mesh relies on internals of its MQTT libraries, in this one module, each with the reason, the
upstream issue and the versions it was verified with. shared/pyproject.toml pins those versions with upper bounds,
and shared/tests/test_mqtt_compat.py fails loudly (naming this module) if an upgrade breaks any of them.

- aiomqtt has no public manual acknowledgement (empicano/aiomqtt#345, draft PR #346): `enable_manual_ack` and
  `acknowledge` reach the paho client aiomqtt wraps (`Client._client`), whose `manual_ack_set`/`ack` are public.
- aiomqtt exposes no "connection lost" signal to a consumer that is busy in a handler (its reconnect discussion,
  empicano/aiomqtt#6, uses the same future): `connection_lost` returns aiomqtt's private `_disconnected` future.
- paho rebuilds its tables of every MQTT property in each `Properties` object and scans them per property set;
  `LeanProperties` shares paho's tables (`names`, `types`, `properties`, public attributes but not a documented
  API) and packs only what is set, byte for byte as paho does (shared/tests/test_mqtt_properties.py).
- paho decodes every incoming packet's properties into a new `Properties` too (`paho.mqtt._packet`, private: its
  decoders name the class as a module global), and finds each property's name by scanning its table:
  `lean_incoming_properties` has them decode into `LeanProperties`, the same attributes found through a dict (the
  coordinator's reads of agents' replies were 5% of its CPU per task on the HTTP face).

The task store and the registry no longer need the first two: they consume through FastStream (a2amesh.subscribers),
whose MQTT client acknowledges manually through its public API.

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
  `get_message` only when none is, so a burst costs one wait, not one per message."""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator, Callable, Iterable
from typing import TYPE_CHECKING, Any

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import MQTTException, Properties, VariableByteIntegers

if TYPE_CHECKING:  # FastStream and zmqtt are the `faststream` extra's: imported only where used
    import zmqtt
    from faststream.mqtt import MQTTBroker
    from zmqtt._internal.transport.base import StreamTransport

VERIFIED_WITH = {"aiomqtt": ("2.5.1",), "paho-mqtt": ("2.2.0",), "zmqtt": ("0.2.5",)}
"""The versions every workaround here was verified with (pyproject's upper bounds keep the next major out)."""


def paho_client(client: aiomqtt.Client) -> paho.Client:
    """The paho client inside an aiomqtt client (aiomqtt keeps it private as `_client`)."""
    inner = client._client
    if not isinstance(inner, paho.Client):
        raise RuntimeError(
            f"aiomqtt {aiomqtt.__version__} no longer wraps a paho client as _client: see a2amesh.mqtt_compat"
        )
    return inner


def enable_manual_ack(client: aiomqtt.Client) -> None:
    """Send PUBACK only when `acknowledge` is called, not when a message arrives (before connecting)."""
    paho_client(client).manual_ack_set(True)


def acknowledge(client: aiomqtt.Client, message: aiomqtt.Message) -> None:
    """PUBACK one message received with manual acknowledgement on."""
    paho_client(client).ack(message.mid, message.qos)


def connection_lost(client: aiomqtt.Client) -> asyncio.Future[Any] | None:
    """A future aiomqtt resolves when the connection drops, or None if this aiomqtt has none."""
    future = getattr(client, "_disconnected", None)
    return future if isinstance(future, asyncio.Future) else None


_TABLES = Properties(PacketTypes.PUBLISH)  # paho's property tables; they do not depend on the packet type
_IDENTIFIERS = {name.replace(" ", ""): identifier for name, identifier in _TABLES.names.items()}
_NAME_OF = {identifier: name for name, identifier in _TABLES.names.items()}
_REPEATABLE = frozenset({11, 38})  # Subscription Identifier, User Property
_RANGE_CHECKED = frozenset(
    {
        "ReceiveMaximum",
        "TopicAlias",
        "TopicAliasMaximum",
        "MaximumPacketSize",
        "SubscriptionIdentifier",
        "RequestResponseInformation",
        "RequestProblemInformation",
        "PayloadFormatIndicator",
    }
)  # the names whose values paho checks when they are set: left to paho
_INT16 = struct.Struct("!H").pack
_INT32 = struct.Struct("!L").pack


def _utf8(value: str | bytes) -> bytes:
    data = value if isinstance(value, bytes) else value.encode("utf-8")
    return _INT16(len(data)) + data


_WRITERS: dict[str, Callable[[Any], bytes]] = {
    "Byte": lambda value: bytes((value,)),
    "Two Byte Integer": _INT16,
    "Four Byte Integer": _INT32,
    "Variable Byte Integer": VariableByteIntegers.encode,
    "Binary Data": lambda value: _INT16(len(value)) + bytes(value),
    "UTF-8 Encoded String": _utf8,
    "UTF-8 String Pair": lambda pair: _utf8(pair[0]) + _utf8(pair[1]),
}
_WRITER_OF = {  # identifier -> (its byte on the wire, how its value is written); every identifier is below 128
    identifier: (bytes((identifier,)), _WRITERS[_TABLES.types[kind]])
    for identifier, (kind, _packets) in _TABLES.properties.items()
}


class LeanProperties(Properties):
    """paho's Properties for what the mesh publishes, without paho's per-object cost: paho rebuilds its tables of
    every MQTT property in each object, finds a name by scanning all of them (twice per property set) and looks
    each value's type up by name while packing; that was a tenth of an agent's CPU. Here the tables are shared,
    names and writers are found in dicts, and only the properties set are packed, in the order paho packs them
    (the bytes are the same; shared/tests/test_mqtt_properties.py holds them so). Setting a property is checked
    as paho checks it."""

    names = _TABLES.names
    types = _TABLES.types
    properties = _TABLES.properties

    def __init__(self, packetType: int) -> None:
        object.__setattr__(self, "packetType", packetType)

    def getIdentFromName(self, compressedName: str) -> int:
        return _IDENTIFIERS.get(compressedName, -1)

    def getNameFromIdent(self, identifier: int) -> str | None:
        return _NAME_OF.get(identifier)

    def __setattr__(self, name: str, value: Any) -> None:
        name = name.replace(" ", "")
        identifier = _IDENTIFIERS.get(name)
        if identifier is None or name in _RANGE_CHECKED:  # unknown names are refused by paho, with its message
            super().__setattr__(name, value)
            return
        if self.packetType not in self.properties[identifier][1]:
            packet = PacketTypes.Names[self.packetType]
            raise MQTTException(f"Property {name} does not apply to packet type {packet}")
        if identifier in _REPEATABLE:
            value = [*self.__dict__.get(name, ()), *(value if isinstance(value, list) else [value])]
        object.__setattr__(self, name, value)

    def pack(self) -> bytes:
        present = sorted((_IDENTIFIERS[name], value) for name, value in vars(self).items() if name in _IDENTIFIERS)
        buffer = b""
        for identifier, value in present:
            prefix, write = _WRITER_OF[identifier]
            for item in value if identifier in _REPEATABLE else (value,):
                buffer += prefix + write(item)
        return VariableByteIntegers.encode(len(buffer)) + buffer


def lean_incoming_properties() -> None:
    """Decode the properties of every packet paho receives into `LeanProperties` (idempotent): paho's packet
    decoders build `Properties` by their module's global name."""
    from paho.mqtt import _packet

    if getattr(_packet, "Properties", None) not in (Properties, LeanProperties):
        raise RuntimeError("paho.mqtt._packet no longer decodes into Properties: see a2amesh.mqtt_compat")
    _packet.Properties = LeanProperties  # type: ignore[misc]


class PackedProperties(LeanProperties):
    """PUBLISH properties packed once rather than on every publish: for properties sent many times, such as the
    responder's reply properties to one subscriber. Not to be changed after the first publish."""

    def pack(self) -> bytes:
        packed = self.__dict__.get("_packed")  # __dict__: paho's __setattr__ only takes MQTT property names
        if packed is None:
            packed = self.__dict__["_packed"] = super().pack()
        return packed


_EVENT_ID_KEY_HEADS: dict[tuple[str, str], bytes] = {}


def packed_event_properties(content_type: str, key: str, event_id: str) -> PackedProperties:
    """PUBLISH properties of Content Type `content_type` and one user property (`key`, `event_id`), packed at once
    (every event an agent publishes carries them): the bytes paho would pack, written directly."""
    head = _EVENT_ID_KEY_HEADS.get((content_type, key))
    if head is None:
        head = _EVENT_ID_KEY_HEADS[(content_type, key)] = bytes((3,)) + _utf8(content_type) + bytes((38,)) + _utf8(key)
    properties = PackedProperties(PacketTypes.PUBLISH)
    fields = properties.__dict__  # set directly: the values are known to be valid
    fields["ContentType"] = content_type
    fields["UserProperty"] = [(key, event_id)]
    body = head + _utf8(event_id)
    fields["_packed"] = VariableByteIntegers.encode(len(body)) + body
    return properties


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


def with_user_properties(properties: Properties | None, pairs: Iterable[tuple[str, str]]) -> LeanProperties:
    """A copy of PUBLISH `properties` with more User Properties (trace context, a2amesh.tracing): the original may be
    packed once and shared by many publishes, so it is never changed."""
    copy = LeanProperties(PacketTypes.PUBLISH)
    if properties is not None:
        for name, value in vars(properties).items():
            if name in _IDENTIFIERS:
                setattr(copy, name, list(value) if name == "UserProperty" else value)
    extra = list(pairs)
    if extra:
        copy.UserProperty = extra
    return copy


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
