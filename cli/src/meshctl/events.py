"""`meshctl events`: the mesh's task events, live, straight from the broker's event topics."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiomqtt

from a2amesh.mqtt import Envelope, make_client
from a2amesh.mqtt_base import TASK_AGENT_PROPERTY
from a2amesh.settings import ServiceSettings
from a2amesh.topics import EVENTS_ALL, AgentAddress, TopicError, TopicKind, parse_topic
from meshctl.client import CliError

KINDS = {"task": "task", "statusUpdate": "status", "artifactUpdate": "artifact", "message": "message"}


@dataclass(frozen=True)
class MeshEvent:
    """One task event as meshctl shows it."""

    time: datetime
    topic: str
    agent: str
    task_id: str
    kind: str
    state: str | None
    artifact: str | None
    payload: dict[str, Any]

    def to_wire(self) -> dict[str, Any]:
        return {
            "time": self.time.isoformat(timespec="milliseconds"),
            "topic": self.topic,
            "agent": self.agent,
            "taskId": self.task_id,
            "kind": self.kind,
            "state": self.state,
            "artifact": self.artifact,
            "event": self.payload,
        }


def agent_address(settings: ServiceSettings, text: str) -> AgentAddress:
    """`echo` (in this org/unit) or `org/unit/echo`."""
    try:
        return AgentAddress.parse(text) if "/" in text else settings.address(text)
    except TopicError as error:
        raise CliError(str(error), code=2) from None


def read_event(envelope: Envelope) -> MeshEvent | None:
    """The event an MQTT message carries, or None for anything that is not one. The agent is the topic's,
    unless the coordinator recorded the event for the agent holding the task (User Property a2a-task-agent)."""
    try:
        parsed = parse_topic(envelope.topic)
        payload = json.loads(envelope.payload)
    except (TopicError, ValueError):
        return None
    if parsed.kind is not TopicKind.EVENT or not isinstance(payload, dict):
        return None
    key = next((key for key in KINDS if isinstance(payload.get(key), dict)), None)
    if key is None:
        return None
    body = payload[key]
    state = (body.get("status") or {}).get("state")
    artifact = body.get("artifact") or {}
    return MeshEvent(
        time=datetime.now().astimezone(),
        topic=envelope.topic,
        agent=envelope.user_properties.get(TASK_AGENT_PROPERTY) or str(parsed.agent),
        task_id=str(body.get("id") if key == "task" else body.get("taskId") or ""),
        kind=KINDS[key],
        state=state.removeprefix("TASK_STATE_") if isinstance(state, str) else None,
        artifact=(artifact.get("name") or artifact.get("artifactId")) if key == "artifactUpdate" else None,
        payload=payload,
    )


async def follow(
    settings: ServiceSettings,
    *,
    agent: str | None,
    limit: int | None,
    seconds: float | None,
    on_ready: Callable[[list[str], str], None],
    on_event: Callable[[MeshEvent], None],
) -> int:
    """Print events until `limit` of them arrived, `seconds` passed, or the caller is interrupted; return
    how many there were. A fresh, clean-session client id, so nothing is left behind on the broker."""
    only = agent_address(settings, agent) if agent else None
    # Events the coordinator records for agents that do not record their own arrive on its topic.
    topics = [only.event_topic, settings.address("coordinator").event_topic] if only else [EVENTS_ALL]
    # the broker pins an identity to its own client id; without credentials (a broker that allows it) any fresh id
    client_id = settings.mqtt.username or settings.address(f"meshctl-{secrets.token_hex(4)}").client_id
    count = 0
    mqtt = settings.mqtt
    try:
        async with make_client(mqtt, client_id) as client:
            for topic in dict.fromkeys(topics):
                await client.subscribe(topic, qos=1)
            on_ready(topics, client_id)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    async for message in client.messages:
                        event = read_event(Envelope.of(message))
                        if event is None or (only is not None and event.agent != str(only)):
                            continue
                        on_event(event)
                        count += 1
                        if limit is not None and count >= limit:
                            break
    except aiomqtt.MqttError as error:
        if count:
            raise CliError(f"lost the broker at {mqtt.host}:{mqtt.port} ({error})") from None
        raise CliError(f"cannot reach the MQTT broker at {mqtt.host}:{mqtt.port} ({error})") from None
    return count
