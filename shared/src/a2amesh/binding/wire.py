"""Small facts of the binding shared by requester and responder."""

from __future__ import annotations

import json
import secrets
import uuid
from typing import Any

from a2amesh.models import AgentCard, AgentInterface, JsonRpcResponse

MQTT_BINDING = "https://a2a-mqtt-mesh.dev/bindings/mqtt5-jsonrpc/v1"
"""The `protocolBinding` URI our cards declare for the MQTT interface (A2A asks custom bindings for a URI)."""

SDK_BINDING_LABEL = "MQTTv5+JSONRPCv2"
"""What the a2a-over-mqtt SDK writes in `protocolBinding`; read as the same binding."""

TASK_EVENTS_EXTENSION = "https://a2a-mqtt-mesh.dev/extensions/task-events/v1"
"""Declared in a card's capabilities.extensions by agents that publish every task event on their event topic
(the durable-record extension). For agents without it, the coordinator records the events it relays."""

POOL_EXTENSION = "https://a2a-mqtt-mesh.dev/extensions/pool/v1"
"""Declared by an agent that also serves a pool; params {"pool": name, "topic": the pool's request topic}.
Requesters may publish to the pool topic (the broker balances across members) and send follow-ups to the
answering member's direct topic (User Property a2a-responder-agent-id)."""

RERUN_EXTENSION = "https://a2a-mqtt-mesh.dev/extensions/rerunnable/v1"
"""Declared by an agent whose skills may run again from the start under the same task id (params {"skills": [ids]}):
when the replica running such a task dies, the requester may hand the task to a live member of its pool. Without
it, a task whose agent died ends FAILED rather than risk doing its work twice."""

SKILL_METADATA_KEY = "skill"
"""Request metadata naming the skill wanted; the coordinator routes on it and agents with several skills read it."""

AGENT_METADATA_KEY = "agent"
"""Request metadata pinning a task to one agent (its id, or org/unit/agent)."""

ROUTING_METADATA_KEY = "routing"
"""Request and Task metadata: why the coordinator chose the skill of a message that named none ({skill, score,
matched, reason}). Responders keep it on the Task they create, so the task's record says why it came there."""

STREAMING_METHODS = frozenset({"SendStreamingMessage", "SubscribeToTask"})

MAX_PACKET_BYTES = 1_048_576
"""The broker's max_packet_size (services/broker/conf.d): a client that publishes a bigger packet is disconnected,
so neither side of the binding ever publishes one."""


def is_mqtt_interface(interface: AgentInterface) -> bool:
    """Whether a card interface is reachable over this binding."""
    return interface.protocol_binding in (MQTT_BINDING, SDK_BINDING_LABEL) or interface.url.startswith(
        ("mqtt://", "mqtts://")
    )


def records_own_events(card: AgentCard) -> bool:
    """Whether the agent publishes its task events itself (see TASK_EVENTS_EXTENSION)."""
    return any(extension.uri == TASK_EVENTS_EXTENSION for extension in card.capabilities.extensions or [])


def pool_of(card: AgentCard) -> str | None:
    """The pool an agent's card says it serves, if any."""
    for extension in card.capabilities.extensions or []:
        if extension.uri == POOL_EXTENSION and extension.params and isinstance(extension.params.get("pool"), str):
            return extension.params["pool"]
    return None


def rerunnable_skills(card: AgentCard) -> frozenset[str]:
    """The skills the card says may be re-run under the same task id (see RERUN_EXTENSION)."""
    for extension in card.capabilities.extensions or []:
        if extension.uri == RERUN_EXTENSION and extension.params:
            skills = extension.params.get("skills")
            if isinstance(skills, list):
                return frozenset(skill for skill in skills if isinstance(skill, str))
    return frozenset()


def new_correlation() -> bytes:
    """Correlation Data: unguessable, per publish, ASCII so that string-minded peers can echo it."""
    return secrets.token_hex(16).encode("ascii")


def new_task_id() -> str:
    """A requester-generated Task.id (UUIDv4), as the profile asks."""
    return str(uuid.uuid4())


def is_valid_task_id(value: Any) -> bool:
    """Task ids on the mesh are UUIDs (the profile: requester-generated UUIDv4)."""
    if not isinstance(value, str) or not value:
        return False
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def encode(response: JsonRpcResponse) -> bytes:
    """A JSON-RPC response as compact UTF-8 JSON."""
    return json.dumps(response.to_wire(), separators=(",", ":")).encode()
