"""A responder's view of one task: its snapshot, who listens to it, and the `TaskContext` agent code works with."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar

from a2amesh.models import (
    Artifact,
    JsonRpcRequest,
    Message,
    Part,
    Role,
    StreamResponse,
    Task,
    TaskArtifactUpdateEvent,
    TaskState,
    TaskStatus,
    TaskStatusUpdateEvent,
    utc_now,
)
from a2amesh.models.fold import fold

Emit = Callable[["TaskRecord", StreamResponse], Awaitable[None]]


class Stop(Enum):
    """Why the runtime cancels a running task on its own, which decides how the task ends."""

    HANDED_OVER = "handed over"
    """Given back to its requesters for a pool peer, which runs it again under the same id: no event of ours."""
    SHUTDOWN = "shutdown"
    """The agent is stopping and the task may not run elsewhere: it ends FAILED."""


class TaskRejectedError(Exception):
    """Raise from a handler to end the task REJECTED with this reason (bad or unsupported input)."""


class TaskFailedError(Exception):
    """Raise from a handler to end the task FAILED with this reason."""


@dataclass
class Subscriber:
    """A requester waiting on a task: a streaming one gets every event, a one-shot one only the outcome."""

    reply_topic: str
    correlation: bytes
    request_id: str | int | None
    streaming: bool
    properties: Any = field(default=None, compare=False, repr=False)
    """The PUBLISH properties of this subscriber's replies, built once."""


@dataclass
class TaskRecord:
    """Everything the responder knows about one task."""

    task: Task
    """The task as it stands. Replaced, never changed in place: a snapshot once handed out (to a listener, the
    reconciler, a queue not yet written out) stays as it was without a deep copy."""
    request: JsonRpcRequest
    request_metadata: dict[str, Any] = field(default_factory=dict)
    subscribers: list[Subscriber] = field(default_factory=list)
    runner: asyncio.Task[None] | None = None
    state: dict[str, Any] = field(default_factory=dict)
    """Agent-owned scratch space that survives across turns of a multi-turn task (the runtime keeps out of it)."""
    started: float = field(default_factory=time.monotonic)
    stopped: Stop | None = None
    """Why the runtime itself cancelled the runner, when it did (a CancelTask leaves it None)."""

    @property
    def id(self) -> str:
        return self.task.id

    @property
    def context_id(self) -> str:
        return self.task.context_id or ""

    @property
    def current_state(self) -> TaskState:
        return self.task.status.state

    @property
    def active(self) -> bool:
        """Running now (submitted or working), as opposed to finished or waiting for the user."""
        return self.runner is not None and not self.runner.done()

    @property
    def unfinished(self) -> TaskRecord | None:
        """This record while the task may still change (running, or waiting for the user); None once it ended."""
        return None if self.task.status.state.is_terminal else self

    def apply(self, item: StreamResponse) -> None:
        """Fold one event into the snapshot (`a2amesh.models.fold`, following the stream as it comes)."""
        self.task = fold(self.task, item)


@dataclass(frozen=True)
class FinishedTask:
    """A task that reached a final state, as the responder keeps it for de-duplication, GetTask and late
    subscribers: the final Task as JSON, decoded when asked for. A full TaskRecord (the Task's models, the
    request, its subscribers) took about 8 KB per task, so 10,000 finished tasks held an agent at 130 MB."""

    id: str
    context_id: str
    current_state: TaskState
    packed: bytes

    active: ClassVar[bool] = False
    runner: ClassVar[None] = None
    unfinished: ClassVar[None] = None
    """Never: a finished task changes no more (TaskRecord.unfinished, for the callers that take either)."""

    @classmethod
    def of(cls, record: TaskRecord) -> FinishedTask:
        return cls(record.id, record.context_id, record.current_state, record.task.to_json().encode())

    @property
    def task(self) -> Task:
        return Task.model_validate_json(self.packed)

    @property
    def subscribers(self) -> list[Subscriber]:
        """Nobody waits on a finished task: whoever asks gets its outcome at once."""
        return []


def agent_message(text: str, task_id: str, context_id: str) -> Message:
    """A message from the agent about a task."""
    return Message(
        message_id=uuid.uuid4().hex, role=Role.AGENT, parts=[Part(text=text)], task_id=task_id, context_id=context_id
    )


class TaskContext:
    """What an agent's handler sees of a task and how it reports progress.

    Every call emits one event: to each requester listening (on its Response Topic) and to the agent's event
    topic, where the task store records it. A handler that returns without ending the task completes it."""

    def __init__(self, record: TaskRecord, emit: Emit) -> None:
        self._record = record
        self._emit = emit

    # -- what the task is --------------------------------------------------------------------------------
    @property
    def id(self) -> str:
        return self._record.id

    @property
    def context_id(self) -> str:
        return self._record.context_id

    @property
    def message(self) -> Message:
        """The latest user message (the request, or the answer to a question the agent asked)."""
        for message in reversed(self._record.task.history or []):
            if message.role is Role.USER:
                return message
        raise LookupError("task has no user message")

    @property
    def history(self) -> list[Message]:
        return list(self._record.task.history or [])

    @property
    def text(self) -> str:
        """The text of the latest user message."""
        return self.message.text()

    @property
    def data(self) -> list[Any]:
        """The JSON values of the latest user message's data parts."""
        return [part.data for part in self.message.parts if part.kind == "data"]

    @property
    def metadata(self) -> dict[str, Any]:
        """The request's metadata merged over the message's (skill hints, workflow links...)."""
        return {**(self.message.metadata or {}), **self._record.request_metadata}

    @property
    def state(self) -> dict[str, Any]:
        """Scratch space kept across turns of this task."""
        return self._record.state

    @property
    def turn(self) -> int:
        """How many user messages the task has received (1 for the first request)."""
        return sum(1 for message in self.history if message.role is Role.USER)

    @property
    def status(self) -> TaskState:
        return self._record.current_state

    # -- reporting ---------------------------------------------------------------------------------------
    async def working(self, text: str | None = None) -> None:
        """Report progress (state WORKING, with an optional note for the requester)."""
        await self._status(TaskState.WORKING, text)

    async def artifact(
        self,
        *parts: Part,
        text: str | None = None,
        data: Any = None,
        name: str | None = None,
        artifact_id: str | None = None,
        append: bool = False,
        last_chunk: bool | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> str:
        """Emit an artifact (or a chunk of one, with `append`); returns its id for further chunks."""
        all_parts = list(parts)
        if text is not None:
            all_parts.append(Part(text=text))
        if data is not None:
            all_parts.append(Part(data=data))
        if not all_parts:
            raise ValueError("an artifact needs at least one part")
        artifact = Artifact(artifact_id=artifact_id or uuid.uuid4().hex, name=name, parts=all_parts, metadata=metadata)
        update = TaskArtifactUpdateEvent(
            task_id=self.id, context_id=self.context_id, artifact=artifact, append=append or None, last_chunk=last_chunk
        )
        await self._emit(self._record, StreamResponse(artifact_update=update))
        return artifact.artifact_id

    async def complete(self, text: str | None = None) -> None:
        """End the task COMPLETED."""
        await self._status(TaskState.COMPLETED, text)

    async def fail(self, reason: str) -> None:
        """End the task FAILED, saying why."""
        await self._status(TaskState.FAILED, reason)

    async def reject(self, reason: str) -> None:
        """End the task REJECTED: the input is empty, unsupported or not this agent's job."""
        await self._status(TaskState.REJECTED, reason)

    async def require_input(self, question: str) -> None:
        """Pause the task INPUT_REQUIRED with a question; the requester answers with the same taskId."""
        await self._status(TaskState.INPUT_REQUIRED, question)

    async def _status(self, state: TaskState, text: str | None) -> None:
        if self._record.current_state.is_terminal:
            raise RuntimeError(f"task {self.id} already ended {self._record.current_state.name}")
        message = agent_message(text, self.id, self.context_id) if text else None
        event = TaskStatusUpdateEvent(
            task_id=self.id,
            context_id=self.context_id,
            status=TaskStatus(state=state, message=message, timestamp=utc_now()),
        )
        await self._emit(self._record, StreamResponse(status_update=event))
