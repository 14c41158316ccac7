"""Which agent a recorded event is attributed to: the topic's, unless a trusted recorder names another."""

from __future__ import annotations

from datetime import UTC, datetime

from a2amesh.models import StreamResponse, TaskState, TaskStatus, TaskStatusUpdateEvent
from a2amesh.mqtt import Envelope
from a2amesh.mqtt_base import TASK_AGENT_PROPERTY
from a2amesh.topics import AgentAddress
from mesh_taskstore.consumer import decode

TRUSTED = frozenset({"coordinator"})


def envelope(publisher: str, named: str | None) -> Envelope:
    event = StreamResponse(
        status_update=TaskStatusUpdateEvent(task_id="t-1", status=TaskStatus(state=TaskState.WORKING))
    )
    properties = {TASK_AGENT_PROPERTY: named} if named else {}
    return Envelope(
        AgentAddress("acme", "default", publisher).event_topic,
        event.to_json().encode(),
        False,
        user_properties=properties,
    )


def test_the_coordinator_may_name_the_agent_holding_the_task() -> None:
    incoming = decode(envelope("coordinator", "acme/default/shouter"), datetime.now(UTC), TRUSTED)
    assert incoming is not None and incoming.agent == "acme/default/shouter"


def test_an_agent_cannot_attribute_its_events_to_another() -> None:
    incoming = decode(envelope("mallory", "acme/default/echo"), datetime.now(UTC), TRUSTED)
    assert incoming is not None and incoming.agent == "acme/default/mallory"


def test_a_malformed_attribution_drops_the_event() -> None:
    assert decode(envelope("coordinator", "not an address"), datetime.now(UTC), TRUSTED) is None


def test_without_attribution_the_topic_decides() -> None:
    incoming = decode(envelope("coordinator", None), datetime.now(UTC), TRUSTED)
    assert incoming is not None and incoming.agent == "acme/default/coordinator"


def test_a_coordinator_replica_is_trusted_but_not_a_lookalike() -> None:
    """Replicas `coordinator-<n>` record for the agents like the coordinator; names merely starting alike do not."""
    replica = decode(envelope("coordinator-3", "acme/default/shouter"), datetime.now(UTC), TRUSTED)
    assert replica is not None and replica.agent == "acme/default/shouter"
    for lookalike in ("coordinator-x", "coordinatorx-1", "coordinator-", "mallory-coordinator-1"):
        incoming = decode(envelope(lookalike, "acme/default/echo"), datetime.now(UTC), TRUSTED)
        assert incoming is not None and incoming.agent == f"acme/default/{lookalike}", lookalike
