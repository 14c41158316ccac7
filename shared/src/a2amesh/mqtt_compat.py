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

zmqtt's internals the task store relies on are in `a2amesh.zmqtt_compat`, which imports neither of these."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import MQTTException, Properties, VariableByteIntegers

if TYPE_CHECKING:  # FastStream and zmqtt are the `faststream` extra's: imported only where used
    pass

VERIFIED_WITH = {"aiomqtt": ("2.5.1",), "paho-mqtt": ("2.2.0",)}
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
