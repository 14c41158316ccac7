"""A bare zmqtt connection for a consumer whose every message is on the hot path: the task store's recorder, which
takes four or more events for every task of the mesh.

FastStream (`a2amesh.subscribers`) runs each message through its pipeline (middlewares, a context per message, a
logging scope, the handler's call wrappers); for the task store that was about a quarter of its CPU, more than its
database writes. zmqtt, the client FastStream itself drives, already gives what such a consumer needs through its
public API: a subscription queue to read messages from, manual acknowledgement (`Message.ack`), re-subscription
after a reconnect, and `Subscription.detach` to stop without unsubscribing a persistent session. This module only
connects it the mesh's way (TLS client certificate, credentials, MQTT 5, persistent session), so importing it does
not import FastStream."""

from __future__ import annotations

import zmqtt

from a2amesh.mqtt_base import Envelope, tls_context
from a2amesh.settings import MqttSettings
from a2amesh.zmqtt_compat import lean_publish_decoding, lean_qos1_delivery, memoize_subscription_selection

RECONNECT = zmqtt.ReconnectConfig(initial_delay=0.2, max_delay=5.0, backoff_factor=2.0, max_attempts=None)
"""Retry for ever, from 0.2 s up to 5 s apart, as `a2amesh.mqtt.RECONNECT_DELAYS` does for the binding."""


def consumer_client(settings: MqttSettings, client_id: str, *, persistent: bool = True) -> zmqtt.MQTTClient:
    """An MQTT 5 zmqtt client connecting as `client_id` with the mesh's TLS client certificate and credentials.
    A persistent one resumes its session (clean start off, session expiry set), as `a2amesh.mqtt.make_client`
    does, so what is published while it is away waits for it on the broker."""
    memoize_subscription_selection()  # zmqtt's per-message routing, remembered per topic (a2amesh.zmqtt_compat)
    lean_publish_decoding()  # and its PUBLISH decoding, straight from the bytes
    lean_qos1_delivery()  # and its QoS 1 delivery and PUBACK, in one step each
    context = tls_context(settings)
    return zmqtt.MQTTClient(
        settings.host,
        settings.port,
        client_id=client_id,
        keepalive=settings.keepalive,
        clean_session=not persistent,
        username=settings.username,
        password=(settings.secret() or "") if settings.username is not None else None,
        tls=context if context is not None else False,
        reconnect=RECONNECT,
        mqtt_connect_timeout=10.0,
        version="5.0",
        session_expiry_interval=settings.session_expiry if persistent else 0,
    )


def is_connected(client: zmqtt.MQTTClient) -> bool:
    """Whether the client holds a live MQTT connection now (zmqtt's `connection_info` raises when not)."""
    try:
        client.connection_info  # noqa: B018
    except zmqtt.MQTTDisconnectedError:
        return False
    return True


def user_properties_of(message: zmqtt.Message) -> dict[str, str]:
    """A received message's User Properties by name (the last of a repeated name wins, as in the binding)."""
    properties = message.properties
    return dict(properties.user_properties) if properties is not None else {}


def envelope_of(message: zmqtt.Message) -> Envelope:
    """The binding's view of a message zmqtt received (its ack stays on `message`: zmqtt's is async)."""
    properties = message.properties
    return Envelope(
        topic=message.topic,
        payload=message.payload,
        retain=message.retain,
        response_topic=(properties.response_topic or None) if properties else None,
        correlation_data=properties.correlation_data if properties else None,
        user_properties=user_properties_of(message),
    )
