"""What the consumer hands the store: one event as taken off the broker, and what recording it did."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from a2amesh.models import StreamResponse


async def no_ack() -> None:
    """The acknowledgement of an event that came from no broker (tests, imports)."""


@dataclass(frozen=True)
class Incoming:
    """One event as taken off the broker: its id, the agent whose topic it came on, the event, its arrival."""

    event_id: str
    agent: str
    event: StreamResponse
    received_at: datetime
    ack: Callable[[], Awaitable[None]] = field(default=no_ack, compare=False, repr=False)
    """Tells the broker the event is recorded (awaited after its batch commits; unacknowledged ones come again)."""
    wire: str = field(default="", compare=False, repr=False)
    """The event's JSON as it arrived (already validated as `event`), kept as the event log's payload: writing it
    back out of the model cost a twentieth of the store's CPU. Empty for an event that came from no broker."""

    @property
    def task_id(self) -> str:
        task_id = self.event.task_id
        if not task_id:
            raise ValueError("event names no task")
        return task_id


class Outcome(StrEnum):
    """What recording an event did."""

    STORED = "stored"
    DUPLICATE = "duplicate"
    NOT_APPLIED = "not-applied"
    """Kept in the event log, but it would have reopened a terminal task, so the snapshot is unchanged."""
    FAILED = "failed"
    """Could not be recorded (a bug or a corrupt row, logged); dropped so that it cannot block the stream."""
