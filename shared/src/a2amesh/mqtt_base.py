"""What every MQTT client of the mesh shares, whichever library carries it (aiomqtt and paho for the binding,
`a2amesh.mqtt`; zmqtt for the task store's consumer, `a2amesh.zmqtt_consumer`): the profile's User Property names,
event ids, the client TLS context and the Envelope a message is read into. It imports no MQTT library, so a
process that consumes through zmqtt alone does not load aiomqtt and paho (4.4 MB of the task store's idle memory)."""

from __future__ import annotations

import os
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from a2amesh.settings import MqttSettings

if TYPE_CHECKING:
    import aiomqtt

JSON = "application/json"
STATUS_PROPERTY = "a2a-status"
STATUS_SOURCE_PROPERTY = "a2a-status-source"
RESPONDER_PROPERTY = "a2a-responder-agent-id"
AUTHORIZATION_PROPERTY = "a2a-authorization"
LOAD_PROPERTY = "a2a-load"
"""On a presence publish: the agent's in-flight tasks per concurrent slot (0 idle, 1 saturated, above 1 queueing)."""
EVENT_ID_PROPERTY = "a2a-event-id"
"""On a task event: an id unique to the event, by which the task store recognises a redelivered one."""
KEEPALIVE_PROPERTY = "a2a-keepalive"
"""On a streaming reply that only says the task is still running (its current status again): activity for the
requester's idle timeout, not an event to relay."""
TASK_AGENT_PROPERTY = "a2a-task-agent"
"""On an event the coordinator records for another agent: the address (org/unit/agent) of the agent holding it."""


def new_event_id() -> str:
    """A fresh event id, 32 hex digits: the milliseconds since the epoch (12), then 80 random bits (20).

    Unique is all the profile asks of it, but the task store keeps a unique index on it: ids that grow with time
    land on that index's last pages, where random ones land on a different page each, so a batch of a hundred
    events dirtied (and wrote back) about a hundred more pages. Two ids of one millisecond differ in their random
    part, so a collision is less likely than one in a trillion even at a million events in that millisecond. The
    wall clock orders them (only the index's locality, never uniqueness, suffers when it steps back), and an id
    tells when its event was published, as the event's own timestamps do."""
    return f"{time.time_ns() // 1_000_000:012x}{os.urandom(10).hex()}"


def tls_context(settings: MqttSettings) -> ssl.SSLContext | None:
    """The client TLS context for these settings, or None for a plaintext connection."""
    if not settings.tls:
        return None
    context = ssl.create_default_context(cafile=str(settings.ca_file) if settings.ca_file else None)
    if settings.cert_file:
        context.load_cert_chain(str(settings.cert_file), str(settings.key_file) if settings.key_file else None)
    return context


@dataclass(frozen=True)
class Envelope:
    """The parts of an incoming MQTT message the binding cares about."""

    topic: str
    payload: bytes
    retain: bool
    response_topic: str | None = None
    correlation_data: bytes | None = None
    user_properties: dict[str, str] = field(default_factory=dict)
    ack: Callable[[], None] = field(default=lambda: None, compare=False, repr=False)
    """Acknowledge the message to the broker. A no-op unless the link acknowledges manually; then the broker
    redelivers, after a reconnect, whatever was never acknowledged."""

    @classmethod
    def of(cls, message: aiomqtt.Message) -> Envelope:
        """Read an aiomqtt message."""
        properties = message.properties
        response_topic = getattr(properties, "ResponseTopic", None) if properties else None
        correlation = getattr(properties, "CorrelationData", None) if properties else None
        pairs: Sequence[tuple[str, str]] = getattr(properties, "UserProperty", None) or [] if properties else []
        payload = message.payload
        if isinstance(payload, str):
            payload = payload.encode()
        elif payload is None or isinstance(payload, int | float):
            payload = b"" if payload is None else str(payload).encode()
        return cls(
            topic=message.topic.value,
            payload=bytes(payload),
            retain=bool(message.retain),
            response_topic=response_topic or None,
            correlation_data=bytes(correlation) if correlation is not None else None,
            user_properties=dict(pairs),
        )
