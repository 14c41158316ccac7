"""Plain MQTT consumers on FastStream (the `a2amesh[faststream]` extra): the registry's card consumer and the task
store's event consumer only subscribe and record, which is what FastStream is for. Agents and the coordinator keep
the aiomqtt binding (`a2amesh.mqtt`), whose request/reply, presence and back-pressure FastStream does not model.

The task store's event recorder is the exception: every event of the mesh passes through it, so it reads zmqtt
directly (`a2amesh.zmqtt_consumer`) rather than through FastStream's per-message pipeline.

FastStream 0.7 speaks MQTT through zmqtt, which acknowledges manually through its public API (`Message.ack`), so
the task store no longer needs aiomqtt's private manual-ack switch. One gap remains, isolated here: a graceful
`MQTTBroker.stop()` unsubscribes every subscriber, which would delete a persistent session's subscription and lose
what is published while the consumer is down. `stop_keeping_session` disconnects first, so there is nothing left
to unsubscribe on (shared/tests/test_subscribers.py shows both behaviours against the real broker)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable

import zmqtt
from faststream.mqtt import MQTTBroker, MQTTMessage
from faststream.security import BaseSecurity, SASLPlaintext

from a2amesh import tracing
from a2amesh.mqtt import Envelope, tls_context
from a2amesh.settings import MqttSettings
from a2amesh.zmqtt_consumer import RECONNECT

log = logging.getLogger(__name__)


def _security(settings: MqttSettings) -> BaseSecurity | None:
    context = tls_context(settings)
    if settings.username is not None:
        password = settings.secret() or ""
        return SASLPlaintext(settings.username, password, ssl_context=context, use_ssl=context is not None)
    return BaseSecurity(ssl_context=context) if context is not None else None


def mqtt_broker(settings: MqttSettings, client_id: str, *, persistent: bool = False, **options: object) -> MQTTBroker:
    """A FastStream MQTT 5 broker connecting as `client_id` with the mesh's TLS client certificate and credentials.
    A persistent one resumes its session (clean start off, session expiry set), as `a2amesh.mqtt.make_client` does.
    FastStream's per-message access log is kept at DEBUG: a consumer handles thousands of events a second.
    Subscribers take `decoder=the_message`: with `apply_types=False` a handler gets what the decoder returns."""
    return MQTTBroker(
        host=settings.host,
        port=settings.port,
        client_id=client_id,
        keepalive=settings.keepalive,
        clean_session=not persistent,
        session_expiry_interval=settings.session_expiry if persistent else 0,
        reconnect=RECONNECT,
        mqtt_connect_timeout=10.0,
        security=_security(settings),
        logger=log,
        log_level=logging.DEBUG,
        apply_types=False,
        **options,  # type: ignore[arg-type]
    )


def is_connected(broker: MQTTBroker) -> bool:
    """Whether the broker holds a live MQTT connection now (FastStream's `connection_info` raises when not)."""
    try:
        broker.connection_info  # noqa: B018
    except (zmqtt.MQTTDisconnectedError, AttributeError):
        return False
    return True


async def stop_keeping_session(broker: MQTTBroker) -> None:
    """Stop `broker` without unsubscribing, so a persistent session keeps its subscriptions and the broker queues
    what arrives meanwhile. (FastStream 0.7's `stop` sends UNSUBSCRIBE; zmqtt skips it once disconnected.)"""
    if is_connected(broker):
        await broker.config.client.disconnect()
    await broker.stop()


START_DELAYS = (0.2, 0.5, 1.0, 2.0, 5.0)
"""Seconds between attempts to start a broker whose start failed; the last value repeats."""


async def start_until_stopped(broker: MQTTBroker, stop: asyncio.Event) -> bool:
    """Start `broker`, retrying until it is up or `stop` is set; True once started. A start fails when the broker
    refuses a subscription (an identity without the right): the consumer then stays disconnected, so its health
    check says so, and retries (hearing nothing must not look healthy). Connection losses after the start are
    FastStream's (zmqtt's) to recover, for ever (`RECONNECT`)."""
    attempt = 0
    while not stop.is_set():
        starting = asyncio.ensure_future(broker.start())
        stopping = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            if not starting.done():
                starting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await starting
        if starting.cancelled():
            return False
        error = starting.exception()
        if error is None:
            return True
        delay = START_DELAYS[min(attempt, len(START_DELAYS) - 1)]
        attempt += 1
        log.warning("consumer start failed (%s); retrying in %.1fs", error, delay)
        with contextlib.suppress(Exception):
            await stop_keeping_session(broker)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=delay)
    return False


async def the_message(message: MQTTMessage) -> MQTTMessage:
    """A decoder that hands handlers the message itself (payload, properties, ack): the mesh validates payloads
    with its own models, so FastStream's per-message argument validation is off (`apply_types=False`), which
    saves about 150 us of CPU per message (docs/architecture.md, "FastStream where it fits")."""
    return message


def envelope_of(message: MQTTMessage) -> Envelope:
    """The binding's view of a message FastStream received (its ack stays on `message`: zmqtt's is async)."""
    raw = message.raw_message
    properties = raw.properties
    return Envelope(
        topic=raw.topic,
        payload=bytes(raw.payload),
        retain=bool(raw.retain),
        response_topic=(properties.response_topic or None) if properties else None,
        correlation_data=properties.correlation_data if properties else None,
        user_properties=dict(properties.user_properties) if properties else {},
    )


MessageHandler = Callable[[MQTTMessage], Awaitable[None]]


def traced(handle: MessageHandler) -> MessageHandler:
    """`handle` inside a consumer span `process {topic template}` per message, continuing the trace the message
    carries (a2amesh.tracing); `handle` itself when tracing is off."""
    if not tracing.enabled:
        return handle

    @functools.wraps(handle)
    async def process(message: MQTTMessage) -> None:
        raw = message.raw_message
        pairs = raw.properties.user_properties if raw.properties else ()
        with tracing.processing(raw.topic, pairs, len(raw.payload)):
            await handle(message)

    return process
