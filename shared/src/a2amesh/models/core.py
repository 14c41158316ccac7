"""Tasks, messages, parts, artifacts and their stream events (A2A v1.0, `lf.a2a.v1`)."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import Field, SerializerFunctionWrapHandler, model_serializer, model_validator

from a2amesh.models.base import A2AModel, Base64Bytes, Int32, JsonObject, Timestamp, utc_now


class TaskState(StrEnum):
    """A task's lifecycle state, written on the wire by its proto enum name."""

    SUBMITTED = "TASK_STATE_SUBMITTED"
    WORKING = "TASK_STATE_WORKING"
    COMPLETED = "TASK_STATE_COMPLETED"
    FAILED = "TASK_STATE_FAILED"
    CANCELED = "TASK_STATE_CANCELED"
    INPUT_REQUIRED = "TASK_STATE_INPUT_REQUIRED"
    REJECTED = "TASK_STATE_REJECTED"
    AUTH_REQUIRED = "TASK_STATE_AUTH_REQUIRED"

    @property
    def is_terminal(self) -> bool:
        """COMPLETED, FAILED, CANCELED and REJECTED end a task for good."""
        return self in TERMINAL_STATES

    @property
    def is_interrupted(self) -> bool:
        """INPUT_REQUIRED and AUTH_REQUIRED end a stream but not the task."""
        return self in INTERRUPTED_STATES

    @property
    def ends_stream(self) -> bool:
        """Whether a stream closes after an event carrying this state."""
        return self.is_terminal or self.is_interrupted


TERMINAL_STATES = frozenset({TaskState.COMPLETED, TaskState.FAILED, TaskState.CANCELED, TaskState.REJECTED})
INTERRUPTED_STATES = frozenset({TaskState.INPUT_REQUIRED, TaskState.AUTH_REQUIRED})


class Role(StrEnum):
    """Who wrote a message."""

    USER = "ROLE_USER"
    AGENT = "ROLE_AGENT"


class Part(A2AModel):
    """One piece of content: exactly one of text, raw bytes, a URL or a JSON value (which may be null)."""

    text: str | None = None
    raw: Base64Bytes | None = None
    url: str | None = None
    data: Any = None
    filename: str | None = None
    media_type: str | None = None
    metadata: JsonObject | None = None

    @model_validator(mode="after")
    def _exactly_one_content(self) -> Part:
        present = self._contents()
        if len(present) != 1:
            raise ValueError(f"a Part carries exactly one of text, raw, url, data (got {present or 'none'})")
        return self

    def _contents(self) -> list[str]:
        present = [name for name in ("text", "raw", "url") if getattr(self, name) is not None]
        if self.data is not None or "data" in self.model_fields_set:
            present.append("data")
        return present

    @property
    def kind(self) -> str:
        """Which content the part carries: text, raw, url or data."""
        return self._contents()[0]

    @model_serializer(mode="wrap")
    def _keep_null_data(self, handler: SerializerFunctionWrapHandler) -> JsonObject:
        wire = handler(self)
        if self.data is None and "data" in self.model_fields_set and "data" not in wire:
            wire["data"] = None  # JSON null is a valid data value: exclude_none must not drop it
        return wire


class Message(A2AModel):
    """One turn of a conversation, from the user or from the agent."""

    message_id: str
    context_id: str | None = None
    task_id: str | None = None
    role: Role
    parts: list[Part] = Field(default_factory=list)
    metadata: JsonObject | None = None
    extensions: list[str] | None = None
    reference_task_ids: list[str] | None = None

    def text(self) -> str:
        """All text parts joined: what a human would read of this message."""
        return "\n".join(part.text for part in self.parts if part.text is not None)


class TaskStatus(A2AModel):
    """A task's state at one moment, with the agent's message about it."""

    state: TaskState
    message: Message | None = None
    timestamp: Timestamp | None = None


class Artifact(A2AModel):
    """An output of a task."""

    artifact_id: str
    name: str | None = None
    description: str | None = None
    parts: list[Part] = Field(default_factory=list)
    metadata: JsonObject | None = None
    extensions: list[str] | None = None


class Task(A2AModel):
    """The unit of work: its identity, current status, outputs and conversation."""

    id: str
    context_id: str | None = None
    status: TaskStatus
    artifacts: list[Artifact] | None = None
    history: list[Message] | None = None
    metadata: JsonObject | None = None

    def with_history(self, length: int | None) -> Task:
        """The task with only its last `length` history messages (GetTask/SendMessage historyLength; None: all)."""
        if length is None or self.history is None:
            return self
        return self.model_copy(update={"history": self.history[-length:] if length > 0 else []})


class TaskStatusUpdateEvent(A2AModel):
    """A change of a task's status, sent while it runs."""

    task_id: str
    context_id: str = ""
    status: TaskStatus
    metadata: JsonObject | None = None


class TaskArtifactUpdateEvent(A2AModel):
    """A new artifact, or a chunk of one, sent while a task runs."""

    task_id: str
    context_id: str = ""
    artifact: Artifact
    append: bool | None = None
    last_chunk: bool | None = None
    metadata: JsonObject | None = None


class StreamResponse(A2AModel):
    """One item of a stream: exactly one of a task, a message, a status update or an artifact update."""

    task: Task | None = None
    message: Message | None = None
    status_update: TaskStatusUpdateEvent | None = None
    artifact_update: TaskArtifactUpdateEvent | None = None

    @model_validator(mode="after")
    def _exactly_one_payload(self) -> StreamResponse:
        present = [n for n in ("task", "message", "status_update", "artifact_update") if getattr(self, n)]
        if len(present) != 1:
            raise ValueError(f"a StreamResponse carries exactly one payload (got {present or 'none'})")
        return self

    @property
    def task_id(self) -> str | None:
        """The id of the task this item is about, if any."""
        if self.task:
            return self.task.id
        if self.status_update:
            return self.status_update.task_id
        if self.artifact_update:
            return self.artifact_update.task_id
        return self.message.task_id if self.message else None

    @property
    def state(self) -> TaskState | None:
        """The task state this item reports, if it reports one."""
        if self.task:
            return self.task.status.state
        if self.status_update:
            return self.status_update.status.state
        return None

    @property
    def ends_stream(self) -> bool:
        """A direct Message, or a terminal or interrupted state, closes the stream."""
        if self.message is not None:
            return True
        state = self.state
        return state is not None and state.ends_stream


class AuthenticationInfo(A2AModel):
    """How a push notification authenticates to its receiver."""

    scheme: str
    credentials: str | None = None


class TaskPushNotificationConfig(A2AModel):
    """Where and how to push a task's updates."""

    tenant: str | None = None
    id: str | None = None
    task_id: str | None = None
    url: str
    token: str | None = None
    authentication: AuthenticationInfo | None = None


class SendMessageConfiguration(A2AModel):
    """How the sender wants a SendMessage handled."""

    accepted_output_modes: list[str] | None = None
    task_push_notification_config: TaskPushNotificationConfig | None = None
    history_length: Int32 | None = None
    return_immediately: bool | None = None


class SendMessageRequest(A2AModel):
    """Params of SendMessage and SendStreamingMessage."""

    tenant: str | None = None
    message: Message
    configuration: SendMessageConfiguration | None = None
    metadata: JsonObject | None = None


class SendMessageResponse(A2AModel):
    """Result of SendMessage: exactly one of a task or a direct message."""

    task: Task | None = None
    message: Message | None = None

    @model_validator(mode="after")
    def _exactly_one_payload(self) -> SendMessageResponse:
        if (self.task is None) == (self.message is None):
            raise ValueError("a SendMessageResponse carries exactly one of task, message")
        return self


class GetTaskRequest(A2AModel):
    """Params of GetTask."""

    tenant: str | None = None
    id: str
    history_length: Int32 | None = None


LIST_TASKS_DEFAULT_PAGE_SIZE = 50
LIST_TASKS_MAX_PAGE_SIZE = 100
"""ListTasks pageSize when none is given, and the most one page holds: the task store applies them, and the
coordinator's listing of its own recent tasks (mesh_coordinator.listing) pages the same way."""


class ListTasksRequest(A2AModel):
    """Params of ListTasks: filters and a page."""

    tenant: str | None = None
    context_id: str | None = None
    status: TaskState | None = None
    page_size: Int32 | None = None
    page_token: str | None = None
    history_length: Int32 | None = None
    status_timestamp_after: Timestamp | None = None
    include_artifacts: bool | None = None

    @model_validator(mode="before")
    @classmethod
    def _unspecified_status_is_no_filter(cls, value: Any) -> Any:
        if isinstance(value, dict) and value.get("status") == "TASK_STATE_UNSPECIFIED":
            value = {k: v for k, v in value.items() if k != "status"}
        return value


class ListTasksResponse(A2AModel):
    """One page of tasks."""

    tasks: list[Task] = Field(default_factory=list)
    next_page_token: str = ""
    page_size: Int32 = 0
    total_size: Int32 = 0

    def to_wire(self) -> JsonObject:
        # Every field here is REQUIRED on the wire, even when empty or zero.
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class CancelTaskRequest(A2AModel):
    """Params of CancelTask."""

    tenant: str | None = None
    id: str
    metadata: JsonObject | None = None


class SubscribeToTaskRequest(A2AModel):
    """Params of SubscribeToTask."""

    tenant: str | None = None
    id: str


__all__ = [
    "INTERRUPTED_STATES",
    "TERMINAL_STATES",
    "Artifact",
    "AuthenticationInfo",
    "CancelTaskRequest",
    "GetTaskRequest",
    "ListTasksRequest",
    "ListTasksResponse",
    "Message",
    "Part",
    "Role",
    "SendMessageConfiguration",
    "SendMessageRequest",
    "SendMessageResponse",
    "StreamResponse",
    "SubscribeToTaskRequest",
    "Task",
    "TaskArtifactUpdateEvent",
    "TaskPushNotificationConfig",
    "TaskState",
    "TaskStatus",
    "TaskStatusUpdateEvent",
    "utc_now",
]
