"""The mesh's own messages beside A2A's: what its services tell each other over MQTT."""

from __future__ import annotations

from pydantic import Field

from a2amesh.models.base import A2AModel

MAX_OWNERS_PER_MESSAGE = 200
"""Owner records in one message: a burst of new tasks goes out in a few messages, each well under the packet cap."""


class TaskOwnerRecord(A2AModel):
    """Who created a task through a coordinator: the caller's principal id and tenant ("" for none). Every read of
    the task is scoped to it."""

    task_id: str = Field(min_length=1, max_length=200)
    principal: str = Field(min_length=1, max_length=300)
    tenant: str = Field(default="", max_length=200)


class TaskOwnerRecords(A2AModel):
    """The owners of the tasks a coordinator accepted since its last such message (on its owner topic)."""

    owners: list[TaskOwnerRecord] = Field(min_length=1, max_length=MAX_OWNERS_PER_MESSAGE)
