"""MQTT 5 plumbing on aiomqtt: connecting with the mesh's settings, reading and writing publish properties,
and a consumer loop that reconnects. Protocol meaning lives in `binding/`; this module only moves bytes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import replace
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from a2amesh import tracing
from a2amesh.mqtt_base import (
    EVENT_ID_PROPERTY,
    JSON,
    Envelope,
    new_event_id,
    tls_context,
)
from a2amesh.mqtt_compat import (
    LeanProperties,
    PackedProperties,
    acknowledge,
    connection_lost,
    enable_manual_ack,
    lean_incoming_properties,
    packed_event_properties,
)
from a2amesh.settings import MqttSettings

log = logging.getLogger(__name__)

NO_DELAY = (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

RECONNECT_DELAYS = (0.2, 0.5, 1.0, 2.0, 5.0)
"""Seconds between reconnect attempts; the last value repeats."""

CALL_TIMEOUT = 10.0
"""Seconds a connect, subscribe or unsubscribe may take (a publish has its own, MqttSettings.publish_timeout)."""


def make_client(
    settings: MqttSettings,
    client_id: str,
    *,
    will: aiomqtt.Will | None = None,
    persistent: bool = False,
    max_queued_incoming: int = 0,
) -> aiomqtt.Client:
    """An MQTT 5 client for `client_id`. A persistent client resumes its session (clean start off, session expiry
    set), so QoS 1 messages published while it was away reach it when it returns."""
    lean_incoming_properties()  # what the client receives is decoded without paho's per-packet table copies
    connect_properties = Properties(PacketTypes.CONNECT)
    connect_properties.SessionExpiryInterval = settings.session_expiry if persistent else 0
    client = aiomqtt.Client(
        settings.host,
        settings.port,
        identifier=client_id,
        username=settings.username,
        password=settings.secret(),
        protocol=aiomqtt.ProtocolVersion.V5,
        will=will,
        clean_start=not persistent,
        properties=connect_properties,
        keepalive=settings.keepalive,
        tls_context=tls_context(settings),
        max_queued_incoming_messages=max_queued_incoming,
        max_inflight_messages=settings.publish_window,  # paho's own window: what the link lets out never queues there
        timeout=CALL_TIMEOUT,
        socket_options=[NO_DELAY],  # request/reply is small messages: Nagle's delay would dominate latency
    )
    client.pending_calls_threshold = 10_000  # a busy agent always has QoS 1 publishes in flight: not a warning
    return client


def publish_properties(
    *,
    response_topic: str | None = None,
    correlation_data: bytes | None = None,
    user: Iterable[tuple[str, str]] = (),
    content_type: str | None = JSON,
    message_expiry: int | None = None,
    packet: int = PacketTypes.PUBLISH,
    reused: bool = False,
) -> Properties:
    """MQTT 5 PUBLISH (or WILL) properties; `reused`: to be sent with many publishes, so packed only once."""
    properties = PackedProperties(packet) if reused else LeanProperties(packet)
    if response_topic:
        properties.ResponseTopic = response_topic
    if correlation_data is not None:
        properties.CorrelationData = correlation_data
    pairs = list(user)
    if pairs:
        properties.UserProperty = pairs
    if content_type:
        properties.ContentType = content_type
    if message_expiry:
        properties.MessageExpiryInterval = message_expiry
    return properties


def event_properties(event_id: str | None = None) -> Properties:
    """The properties of one task event: JSON, and its event id (a fresh one by default). Every event an agent
    publishes has them, so they are packed at once, as publish_properties would pack them."""
    return packed_event_properties(JSON, EVENT_ID_PROPERTY, event_id or new_event_id())


Handler = Callable[[Envelope], Awaitable[None]]
OnConnect = Callable[[aiomqtt.Client], Awaitable[None]]


class SubscriptionRefusedError(RuntimeError):
    """The broker refused a subscription the link needs (the link stays down and retries)."""


class NotConnectedError(ConnectionError):
    """The link had no broker connection within the time a publish was allowed to wait."""


class PublishWindow:
    """At most `size` publishes of one link out at once (sent and waiting for their PUBACK); the others wait their
    turn, first come first served (asyncio's semaphore wakes its waiters in order).

    Without it, thousands of publishes started together (an agent's tasks all ending at once) all went to paho at
    once: each waited behind the others in paho's queue while its PUBACK timeout ran, timed out, was sent again
    (the first copy still queued), and the tasks ended FAILED. Waiting here is back-pressure instead: the caller
    waits with its message, nothing piles up in the client, and a publish's time limits start when its turn comes."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._slots = asyncio.Semaphore(size)
        self.waiting = 0
        """Publishes waiting for their turn now."""
        self.out = 0
        """Publishes that have their turn now: sent (or being sent, or retried) and not yet acknowledged."""

    async def enter(self) -> None:
        """Take a place in the window, waiting for one behind those already waiting; `leave` gives it back (a plain
        pair, not a context manager: this is on the path of every publish)."""
        if self._slots.locked():
            self.waiting += 1
            try:
                await self._slots.acquire()
            finally:
                self.waiting -= 1
        else:
            await self._slots.acquire()
        self.out += 1

    def leave(self) -> None:
        self.out -= 1
        self._slots.release()


class MqttLink:
    """One long-lived MQTT 5 connection that reconnects, re-subscribes, hands each message to a handler in
    order, and lets any number of tasks publish through it.

    The handler runs inline so a slow consumer applies back-pressure instead of growing a queue; it must stay
    short (spawn tasks for long work). A handler that raises is logged and the message skipped."""

    def __init__(
        self,
        settings: MqttSettings,
        client_id: str,
        subscriptions: Sequence[str] = (),
        handler: Handler | None = None,
        *,
        will: aiomqtt.Will | None = None,
        persistent: bool = False,
        on_connect: OnConnect | None = None,
        manual_ack: bool = False,
    ) -> None:
        self.settings = settings
        self.manual_ack = manual_ack
        self.client_id = client_id
        self.subscriptions = list(subscriptions)
        self.handler = handler
        self.will = will
        self.persistent = persistent
        self.on_connect = on_connect
        self.connected = asyncio.Event()
        self.reconnects = 0
        self.window = PublishWindow(settings.publish_window)
        self._live: aiomqtt.Client | None = None
        self._down_seconds = 0.0
        """Seconds the link spent without a connection, up to `_down_since` (see `downtime`)."""
        self._down_since: float | None = time.monotonic()

    async def run(self, stop: asyncio.Event) -> None:
        """Stay connected until `stop` is set."""
        attempt = 0
        while not stop.is_set():
            try:
                client = make_client(self.settings, self.client_id, will=self.will, persistent=self.persistent)
                if self.manual_ack:
                    enable_manual_ack(client)  # PUBACK only when the handler's work is durable
                async with client:
                    attempt = 0
                    for topic_filter in self.subscriptions:
                        granted = await client.subscribe(topic_filter, qos=1)
                        refused = [code for code in granted or [] if getattr(code, "value", 0) >= 0x80]
                        if refused:  # e.g. an identity without the right: hearing nothing must not look healthy
                            raise SubscriptionRefusedError(
                                f"{self.client_id}: subscription to {topic_filter} refused ({refused[0]})"
                            )
                    self._live = client
                    if self.on_connect is not None:
                        await self.on_connect(client)
                    self._mark_up()
                    self.connected.set()
                    log.info("connected as %s; subscribed to %s", self.client_id, ", ".join(self.subscriptions) or "-")
                    await self._pump(client, stop)
            except Exception as error:  # MQTT errors, and anything an on_connect hook raised: retry, never die
                delay = RECONNECT_DELAYS[min(attempt, len(RECONNECT_DELAYS) - 1)]
                attempt += 1
                self.reconnects += 1
                if isinstance(error, aiomqtt.MqttError):
                    log.warning("mqtt connection of %s lost (%s); reconnecting in %.1fs", self.client_id, error, delay)
                else:
                    log.exception("connection setup of %s failed; retrying in %.1fs", self.client_id, delay)
                await _sleep_unless(stop, delay)
            finally:
                self.connected.clear()
                self._mark_down()
                self._live = None

    @property
    def client(self) -> aiomqtt.Client | None:
        """The live client, while connected (for a last publish during shutdown)."""
        return self._live

    def _mark_up(self) -> None:
        if self._down_since is not None:
            self._down_seconds += time.monotonic() - self._down_since
            self._down_since = None

    def _mark_down(self) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()

    def downtime(self) -> float:
        """Seconds this link has spent without a broker connection since it was made (only ever grows)."""
        down = self._down_seconds
        if self._down_since is not None:
            down += time.monotonic() - self._down_since
        return down

    async def publish(
        self,
        topic: str,
        payload: bytes | str,
        *,
        qos: int = 1,
        retain: bool = False,
        properties: Properties | None = None,
        wait: float = 10.0,
    ) -> None:
        """Publish through the link's window (`PublishWindow`: in turn, FIFO, once the publishes already out leave
        room), then wait up to `wait` seconds for a connection and retry within that time if the connection drops
        mid-publish (a broker restart: the run loop reconnects meanwhile).

        `wait` counts from the publish's turn, not from the call: however many publishes are ahead of it, a publish
        never fails for having queued behind them. Time without a connection counts from the call, though: once the
        link has been down for `wait` seconds since then, the publish fails when its turn comes, so a long outage
        fails every waiting publish within about `wait` seconds, not one window's worth per `wait`."""
        down_at_call = self.downtime()
        publish_timeout = self.settings.publish_timeout
        await self.window.enter()
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + wait
            failures = 0
            while True:
                if not self.connected.is_set():  # only then wait: wait_for costs a task per publish even when set
                    remaining = min(deadline - loop.time(), wait - (self.downtime() - down_at_call))
                    try:
                        await asyncio.wait_for(self.connected.wait(), timeout=max(remaining, 0.01))
                    except TimeoutError:
                        raise NotConnectedError(f"{self.client_id}: no broker connection within {wait}s") from None
                client = self._live
                if client is not None:
                    try:
                        await client.publish(
                            topic, payload, qos=qos, retain=retain, properties=properties, timeout=publish_timeout
                        )
                        return
                    except aiomqtt.MqttError as error:
                        # Retry on whatever connection is current: a stale connection's publish can time out after
                        # the link reconnected, and must not mark the new one down (the run loop notices real drops).
                        failures += 1
                        log.warning("publish to %s failed (%s); retrying", topic, error)
                if loop.time() >= deadline:
                    raise NotConnectedError(
                        f"{self.client_id}: publish to {topic} failed {failures} time(s) in {wait}s"
                    )
                await asyncio.sleep(min(0.05 * 2**failures, 1.0))
        finally:
            self.window.leave()

    if tracing.enabled:  # decided once per process: with tracing off, `publish` above is all there is
        _untraced_publish = publish

        async def publish(  # type: ignore[no-redef]
            self, topic: str, payload: bytes | str, *, properties: Properties | None = None, **options: Any
        ) -> None:
            """Publish in a producer span, its trace context in the User Properties (a2amesh.tracing)."""
            await tracing.traced_publish(self._untraced_publish, topic, payload, properties, **options)

    async def _pump(self, client: aiomqtt.Client, stop: asyncio.Event) -> None:
        """One consumer task reads the messages in order; `stop` cancels it. A dropped connection surfaces as the
        consumer's exception, for `run` to reconnect."""

        async def consume() -> None:
            async for message in client.messages:
                envelope = Envelope.of(message)
                if self.manual_ack and message.qos > 0:
                    envelope = replace(envelope, ack=_acknowledger(client, message))
                if self.handler is None:
                    envelope.ack()
                    continue
                try:
                    if tracing.enabled:
                        await tracing.traced_process(self.handler, envelope)
                    else:
                        await self.handler(envelope)
                except Exception:
                    log.exception("handler failed on %s; message skipped", envelope.topic)

        consumer = asyncio.create_task(consume())
        stopper = asyncio.create_task(stop.wait())
        # a dropped connection must end the pump even while a handler is busy (it may be waiting on this very link)
        dropped = connection_lost(client)
        watched: set[asyncio.Future[Any]] = {consumer, stopper}
        if dropped is not None:
            watched.add(dropped)
        try:
            await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            if not consumer.done():
                consumer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await consumer
        if not consumer.cancelled() and consumer.exception() is not None:
            raise consumer.exception()  # type: ignore[misc]
        if dropped is not None and dropped.done() and not stop.is_set():
            raise aiomqtt.MqttError("connection lost")


def _acknowledger(client: aiomqtt.Client, message: aiomqtt.Message) -> Callable[[], None]:
    """PUBACK for one message, once. After a reconnect the old connection's acks are moot (and fail quietly):
    the broker redelivers those messages, and consumers are idempotent."""
    done = False

    def ack() -> None:
        nonlocal done
        if not done:
            done = True
            acknowledge(client, message)

    return ack


async def consume(
    settings: MqttSettings,
    client_id: str,
    subscriptions: Sequence[str],
    handle: Handler,
    stop: asyncio.Event,
    *,
    persistent: bool = False,
    on_connect: OnConnect | None = None,
    connected: asyncio.Event | None = None,
    manual_ack: bool = False,
) -> None:
    """Subscribe (QoS 1) and hand every message to `handle`, in order, reconnecting until `stop` is set.
    `connected`, when given, is set while the consumer is connected."""
    link = MqttLink(
        settings, client_id, subscriptions, handle, persistent=persistent, on_connect=on_connect, manual_ack=manual_ack
    )
    if connected is not None:
        link.connected = connected
    await link.run(stop)


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
