"""Tools for the break-in tests (tests/test_security_broker.py): identities admitted to the session broker,
connection attempts that say why they failed, SUBACK and PUBACK reason codes (aiomqtt waits for a PUBACK but
drops its reason code), bounded reads, and a tally of what was tried."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from a2amesh.mqtt import make_client, tls_context
from a2amesh.mqtt_compat import paho_client
from a2amesh.settings import MqttSettings
from a2amesh.topics import AgentAddress, PoolAddress
from devstack.pki import Identity, Role
from devstack.stack import Stack

NOT_AUTHORIZED = 0x87
"""The reason code of a refused CONNECT, SUBSCRIBE or PUBLISH (MQTT 5)."""
GRANTED = (0, 1, 2)
"""SUBACK codes of a granted subscription (the QoS granted)."""
DELIVERED = (0x00, 0x10)
"""PUBACK codes of an accepted publish: success, or success with no matching subscribers."""
CONNECT_TIMEOUT = 3.0
"""Seconds a connection attempt may take (a TLS refusal shows up as no CONNACK at all)."""
QUIET = 1.0
"""Seconds a bounded "nothing arrives" check listens."""


def short_id() -> str:
    return uuid.uuid4().hex[:8]


# -- identities ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Actor:
    """An identity admitted to the broker, and its credentials."""

    identity: Identity
    settings: MqttSettings
    org: str
    unit: str

    @property
    def name(self) -> str:
        return self.identity.name

    @property
    def client_id(self) -> str:
        """Its MQTT username, which the broker pins as its client id."""
        return self.identity.username(self.org, self.unit)

    @property
    def address(self) -> AgentAddress:
        return AgentAddress(self.org, self.unit, self.identity.name)

    @property
    def pool(self) -> PoolAddress:
        assert self.identity.pool, f"{self.name} serves no pool"
        return PoolAddress(self.org, self.unit, self.identity.pool)

    @property
    def inbox_filter(self) -> str:
        """Every reply inbox of this identity (what a requester subscribes to)."""
        return self.address.reply_filter()

    def settings_with(self, **changes: Any) -> MqttSettings:
        """Its credentials with some changed (another certificate, no password, no TLS...)."""
        return self.settings.model_copy(update=changes)


def admit(stack: Stack, identity: Identity) -> Actor:
    """Provision an identity on the running broker (dynsec client and role) and return its credentials."""
    stack.provision(identity)
    return Actor(identity, stack.mqtt_settings(stack.pki.client(identity)), stack.org, stack.unit)


def admit_many(stack: Stack, prefix: str, role: Role, count: int, *, pools: bool = False) -> list[Actor]:
    """`count` fresh identities of one role, named <prefix>-<role><n> (agents get a pool each when asked)."""
    actors = []
    for n in range(count):
        name = f"{prefix}-{role.value}{n}"
        actors.append(admit(stack, Identity(name, role, f"{name}-pool" if pools else None)))
    return actors


# -- connecting --------------------------------------------------------------------------------------------------
def client(settings: MqttSettings, client_id: str, *, will: aiomqtt.Will | None = None) -> aiomqtt.Client:
    """The mesh's own MQTT client (a2amesh.mqtt.make_client) with a short, bounded connect timeout."""
    mqtt_client = make_client(settings, client_id, will=will)
    mqtt_client.timeout = CONNECT_TIMEOUT
    return mqtt_client


async def connect_error(settings: MqttSettings, client_id: str) -> str | None:
    """None when the broker accepts the connection, else why it did not: the CONNACK reason, or (a TLS refusal
    reaches the client as a connection that never gets its CONNACK) what the TLS layer said."""
    try:
        async with client(settings, client_id):
            return None
    except aiomqtt.MqttError as error:
        reason = f"{type(error).__name__}: {error}"
        if settings.tls and not isinstance(error, aiomqtt.MqttCodeError):
            reason += f" (TLS: {await tls_verdict(settings, client_id)})"
        return reason


async def tls_verdict(settings: MqttSettings, client_id: str) -> str:
    """Open a TLS connection with these settings' certificate, send a bare MQTT 5 CONNECT and report what comes back:
    the broker's TLS alert when it rejects the certificate, else that the handshake was accepted."""
    connect = _connect_packet(client_id)
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(settings.host, settings.port, ssl=tls_context(settings)), CONNECT_TIMEOUT
        )
    except (OSError, TimeoutError) as error:
        return f"handshake failed: {error}"
    try:
        writer.write(connect)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(4), CONNECT_TIMEOUT)
    except (OSError, TimeoutError) as error:
        return f"refused: {error}"
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    if not answer:
        return "refused: connection closed"
    return f"handshake accepted, MQTT answered {answer.hex()}"


def _connect_packet(client_id: str) -> bytes:
    """MQTT 5 CONNECT: clean start, keepalive 60 s, no properties, no credentials."""
    identifier = client_id.encode()
    body = b"\x00\x04MQTT\x05\x02\x00\x3c\x00" + len(identifier).to_bytes(2, "big") + identifier
    assert len(body) < 128
    return bytes([0x10, len(body)]) + body


async def leave_with_will(mqtt_client: aiomqtt.Client) -> None:
    """Disconnect with reason 0x04 (Disconnect with Will Message): the broker publishes the client's Will, exactly as
    if the connection had broken."""
    reason = ReasonCode(PacketTypes.DISCONNECT, "Disconnect with will message")
    paho_client(mqtt_client).disconnect(reasoncode=reason)
    await asyncio.sleep(0.3)  # let the DISCONNECT go out before the context manager closes the socket


# -- what the broker answers -------------------------------------------------------------------------------------
async def suback(mqtt_client: aiomqtt.Client, topic_filter: str) -> int:
    """The SUBACK reason code of one subscription (0-2 granted, 0x87 not authorized)."""
    (code,) = await mqtt_client.subscribe(topic_filter, qos=1, timeout=5)
    return code.value if isinstance(code, ReasonCode) else int(code)


class Pubacks:
    """QoS 1 publishes that return the broker's PUBACK reason code: 0x87 when the ACL refuses the publish.

    aiomqtt resolves a publish on its PUBACK but throws the reason code away, so this hooks paho's on_publish
    (callbacks run on the event loop: the PUBACK cannot be read before the publish is registered here)."""

    def __init__(self, mqtt_client: aiomqtt.Client) -> None:
        self._paho = paho_client(mqtt_client)
        self._waiting: dict[int, asyncio.Future[int]] = {}
        inner = self._paho.on_publish

        def on_publish(*args: Any) -> None:
            _, _, mid, reason_code, _ = args
            future = self._waiting.pop(mid, None)
            if future is not None and not future.done():
                future.set_result(reason_code.value if isinstance(reason_code, ReasonCode) else int(reason_code))
            inner(*args)

        self._paho.on_publish = on_publish

    async def publish(
        self, topic: str, payload: bytes, *, retain: bool = False, properties: Properties | None = None
    ) -> int:
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        info = self._paho.publish(topic, payload, qos=1, retain=retain, properties=properties)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise aiomqtt.MqttCodeError(info.rc, f"could not publish on {topic}")
        self._waiting[info.mid] = future
        return await asyncio.wait_for(future, timeout=5)


@contextlib.asynccontextmanager
async def connected(actor: Actor, client_id: str | None = None) -> AsyncIterator[tuple[aiomqtt.Client, Pubacks]]:
    """A connection as `actor`, and a publisher that reports PUBACK codes."""
    async with client(actor.settings, client_id or actor.client_id) as mqtt_client:
        yield mqtt_client, Pubacks(mqtt_client)


# -- reading, bounded --------------------------------------------------------------------------------------------
async def drain(mqtt_client: aiomqtt.Client, seconds: float = QUIET) -> list[aiomqtt.Message]:
    """Everything that arrives within `seconds` (what was queued, and what comes meanwhile)."""
    received: list[aiomqtt.Message] = []
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            async for message in mqtt_client.messages:
                received.append(message)
    return received


async def collect_until(
    mqtt_client: aiomqtt.Client, done: Callable[[list[aiomqtt.Message]], bool], timeout: float
) -> list[aiomqtt.Message]:
    """Messages until `done(received)` holds or `timeout` passes (the caller asserts on what it got)."""
    received: list[aiomqtt.Message] = []
    if done(received):
        return received
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            async for message in mqtt_client.messages:
                received.append(message)
                if done(received):
                    break
    return received


async def retained(settings: MqttSettings, topic: str, client_id: str) -> aiomqtt.Message | None:
    """The message retained on `topic` right now, or None (read by a fresh subscriber)."""
    async with client(settings, client_id) as reader:
        await reader.subscribe(topic, qos=1)
        for message in await collect_until(reader, lambda got: bool(got), QUIET):
            if message.retain:
                return message
    return None


def payload_of(message: aiomqtt.Message) -> bytes:
    payload = message.payload
    return payload if isinstance(payload, bytes) else str(payload or "").encode()


def user_properties(message: aiomqtt.Message) -> dict[str, str]:
    return dict(getattr(message.properties, "UserProperty", None) or [])


@contextlib.asynccontextmanager
async def running(run: Callable[[asyncio.Event], Awaitable[None]], ready: asyncio.Event) -> AsyncIterator[None]:
    """Run a link, responder or requester (anything with `run(stop)`) for the block, once it is connected."""
    stop = asyncio.Event()
    task = asyncio.create_task(run(stop))
    try:
        async with asyncio.timeout(10):
            await ready.wait()
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=15)


# -- the tally ---------------------------------------------------------------------------------------------------
@dataclass
class Tally:
    """Every attempt made, split into cross-identity attempts (must be denied) and own-topic controls (must be
    allowed: a broker that refuses everything would otherwise pass)."""

    cross: Counter[str] = field(default_factory=Counter)
    cross_denied: Counter[str] = field(default_factory=Counter)
    own: Counter[str] = field(default_factory=Counter)
    own_allowed: Counter[str] = field(default_factory=Counter)
    leaks: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def attack(self, kind: str, who: str, denied: bool, detail: str = "") -> None:
        """A cross-identity attempt: `denied` says whether the broker refused it."""
        self.cross[kind] += 1
        if denied:
            self.cross_denied[kind] += 1
        else:
            self.leaks.append(f"{kind}: {who} {detail}".rstrip())

    def control(self, kind: str, who: str, allowed: bool, detail: str = "") -> None:
        """An own-topic (or by-design) action: `allowed` says whether the broker let it through."""
        self.own[kind] += 1
        if allowed:
            self.own_allowed[kind] += 1
        else:
            self.failures.append(f"{kind}: {who} {detail}".rstrip())

    @property
    def attempts(self) -> int:
        return sum(self.cross.values())

    @property
    def denied(self) -> int:
        return sum(self.cross_denied.values())

    @property
    def controls(self) -> int:
        return sum(self.own.values())

    @property
    def allowed(self) -> int:
        return sum(self.own_allowed.values())

    def report(self, title: str) -> str:
        own_header = "own-topic control (must be allowed)"
        width = max(len(kind) for kind in [*self.cross, *self.own, own_header])
        lines = [f"== {title} ==", f"  {'cross-identity attempt (must be denied)':<{width}}  tried  denied"]
        lines += [f"  {kind:<{width}}  {n:5d}  {self.cross_denied[kind]:6d}" for kind, n in sorted(self.cross.items())]
        lines += [f"  {own_header:<{width}}  tried  allowed"]
        lines += [f"  {kind:<{width}}  {n:5d}  {self.own_allowed[kind]:7d}" for kind, n in sorted(self.own.items())]
        lines.append(
            f"  TOTAL: {self.attempts} cross-identity attempts, {self.denied} denied, {self.attempts - self.denied} "
            f"allowed; {self.controls} controls, {self.allowed} allowed as expected"
        )
        lines += [f"  LEAK: {leak}" for leak in self.leaks]
        lines += [f"  CONTROL FAILED: {failure}" for failure in self.failures]
        return "\n".join(lines)


# -- the role table of docs/security.md ----------------------------------------------------------------------------
def role_table() -> str:
    """The rights of every role as pki.py grants them, as the Markdown table docs/security.md carries."""
    lines = [
        "| role | username (= client id when pinned) | may publish | may subscribe |",
        "|---|---|---|---|",
    ]
    for role in Role:
        identity = Identity("{name}", role, "{pool}" if role is Role.AGENT else None)
        if role is Role.BRIDGE:
            identity = Identity("{name}", role, site_agents=("{agent}",), site_pools=("{pool}",))
        acls = identity.acls("{org}", "{unit}")
        send = [str(acl["topic"]) for acl in acls if acl["acltype"] == "publishClientSend"]
        subscribe = [str(acl["topic"]) for acl in acls if acl["acltype"] == "subscribePattern"]
        pinned = " (pinned)" if identity.pinned else ""
        lines.append(
            f"| {role.value} | `{identity.username('{org}', '{unit}')}`{pinned} | {_cell(send)} | {_cell(subscribe)} |"
        )
    return "\n".join(lines)


def _cell(topics: list[str]) -> str:
    return "<br>".join(f"`{topic}`" for topic in topics) or "nothing"
