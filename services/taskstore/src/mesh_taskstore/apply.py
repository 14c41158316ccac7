"""How one task event changes a task snapshot: pure functions over the A2A models, no database, no I/O, so the
merge rules can be tested (and reasoned about) on their own.

Rules:
- `task`: the snapshot wins for status, context and metadata; history and artifacts are merged so the record
  never forgets a message or an artifact it has already seen (the snapshot's order first, then what only the
  record knew; artifacts with the same id are replaced by the snapshot's).
- `statusUpdate`: sets the status; its message, if any, joins the history unless a message with that id is there.
- `artifactUpdate`: adds the artifact, replaces one with the same id, or (append=true) extends its parts.
- `message` with a taskId: joins the history (deduplicated by messageId).
- A task first seen through an update is created from it.
- A terminal task keeps its terminal state: a status (or snapshot) with any other state is not applied. The
  caller still records the event, so the attempt stays visible.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from a2amesh.models import Artifact, Message, StreamResponse, Task, TaskArtifactUpdateEvent, TaskState, TaskStatus


class EventKind(StrEnum):
    """Which payload a StreamResponse carries, named as on the wire."""

    TASK = "task"
    STATUS_UPDATE = "statusUpdate"
    ARTIFACT_UPDATE = "artifactUpdate"
    MESSAGE = "message"


def kind_of(event: StreamResponse) -> EventKind:
    """The kind of a (validated) StreamResponse."""
    if event.task is not None:
        return EventKind.TASK
    if event.status_update is not None:
        return EventKind.STATUS_UPDATE
    if event.artifact_update is not None:
        return EventKind.ARTIFACT_UPDATE
    return EventKind.MESSAGE


@dataclass(frozen=True)
class Applied:
    """The outcome of applying one event.

    `task` is the snapshot afterwards (the unchanged input when `applied` is false); `status` is the status the
    event set, if it set one; `note` says why an event was not applied."""

    task: Task
    applied: bool = True
    status: TaskStatus | None = None
    note: str | None = None


def blocks_transition(current: TaskState, new: TaskState) -> bool:
    """Whether moving from `current` to `new` would reopen (or rewrite) a finished task."""
    return current.is_terminal and new != current


def apply_event(current: Task | None, event: StreamResponse) -> Applied:
    """Apply `event` to `current` (None when the task is not known yet). Never mutates its inputs.

    Raises ValueError for an event that names no task (a direct message without taskId)."""
    if event.task is not None:
        return _apply_snapshot(current, event.task)
    if event.status_update is not None:
        update = event.status_update
        return _apply_status(current or _new_task(update.task_id, update.context_id), update.status, update.context_id)
    if event.artifact_update is not None:
        update = event.artifact_update
        base = current or _new_task(update.task_id, update.context_id, TaskState.WORKING)
        return Applied(
            _with_context(
                base.model_copy(update={"artifacts": apply_artifact(base.artifacts, update)}), update.context_id
            )
        )
    message = event.message
    if message is None or not message.task_id:
        raise ValueError("a message without taskId belongs to no task")
    base = current or _new_task(message.task_id, message.context_id)
    return Applied(
        _with_context(base.model_copy(update={"history": add_message(base.history, message)}), message.context_id)
    )


def _new_task(task_id: str, context_id: str | None, state: TaskState = TaskState.SUBMITTED) -> Task:
    """A placeholder for a task first seen through an update (its earlier events were never received)."""
    return Task(id=task_id, context_id=context_id or None, status=TaskStatus(state=state))


def _with_context(task: Task, context_id: str | None) -> Task:
    """Fill in the context id from an update when the snapshot has none (the first one seen wins)."""
    if task.context_id or not context_id:
        return task
    return task.model_copy(update={"context_id": context_id})


def _apply_snapshot(current: Task | None, snapshot: Task) -> Applied:
    incoming = snapshot.model_copy(deep=True)
    if current is None:
        return Applied(incoming, status=incoming.status)
    if blocks_transition(current.status.state, incoming.status.state):
        return Applied(current, applied=False, note=_refusal(current, incoming.status.state))
    merged = incoming.model_copy(
        update={
            "context_id": incoming.context_id or current.context_id,
            "history": merge_history(current.history, incoming.history),
            "artifacts": merge_artifacts(current.artifacts, incoming.artifacts),
            "metadata": incoming.metadata if incoming.metadata is not None else current.metadata,
        }
    )
    return Applied(merged, status=merged.status)


def _apply_status(current: Task, status: TaskStatus, context_id: str | None) -> Applied:
    if blocks_transition(current.status.state, status.state):
        return Applied(current, applied=False, note=_refusal(current, status.state))
    history = add_message(current.history, status.message) if status.message is not None else current.history
    updated = current.model_copy(update={"status": status.model_copy(deep=True), "history": history})
    return Applied(_with_context(updated, context_id), status=updated.status)


def _refusal(current: Task, new: TaskState) -> str:
    return f"task {current.id} is {current.status.state.value}; not moving it to {new.value}"


def add_message(history: list[Message] | None, message: Message) -> list[Message]:
    """`history` with `message` appended, unless a message with its id is already there."""
    known = list(history or [])
    if any(existing.message_id == message.message_id for existing in known):
        return known
    return [*known, message.model_copy(deep=True)]


def merge_history(known: list[Message] | None, incoming: list[Message] | None) -> list[Message] | None:
    """The snapshot's history, followed by any message only the record had."""
    if incoming is None:
        return known
    ids = {message.message_id for message in incoming}
    return [*incoming, *(message for message in known or [] if message.message_id not in ids)]


def merge_artifacts(known: list[Artifact] | None, incoming: list[Artifact] | None) -> list[Artifact] | None:
    """Known artifacts, each replaced by the snapshot's version when it has one, then the snapshot's new ones.
    A snapshot without artifacts keeps the known ones."""
    if not incoming:
        return known
    by_id = {artifact.artifact_id: artifact for artifact in incoming}
    known_ids = {artifact.artifact_id for artifact in known or []}
    merged = [by_id.get(artifact.artifact_id, artifact) for artifact in known or []]
    return merged + [artifact for artifact in incoming if artifact.artifact_id not in known_ids]


def apply_artifact(artifacts: list[Artifact] | None, update: TaskArtifactUpdateEvent) -> list[Artifact]:
    """`artifacts` after one artifact update: appended parts when `append` is true and the artifact exists,
    otherwise the artifact added (or replacing the one with the same id)."""
    incoming = update.artifact.model_copy(deep=True)
    result = list(artifacts or [])
    for index, existing in enumerate(result):
        if existing.artifact_id != incoming.artifact_id:
            continue
        if update.append:
            result[index] = _extend(existing, incoming)
        else:
            result[index] = incoming
        return result
    result.append(incoming)
    return result


def _extend(existing: Artifact, chunk: Artifact) -> Artifact:
    """`existing` with `chunk`'s parts appended; descriptive fields the chunk sets override the known ones."""
    changes: dict[str, object] = {"parts": [*existing.parts, *chunk.parts]}
    for name in ("name", "description", "extensions"):
        value = getattr(chunk, name)
        if value is not None:
            changes[name] = value
    if chunk.metadata:
        changes["metadata"] = {**(existing.metadata or {}), **chunk.metadata}
    return existing.model_copy(update=changes)


def trim(task: Task, history_length: int | None = None, include_artifacts: bool = True) -> Task:
    """A view of `task` for a reader: the last `history_length` messages (none for 0, all for None), and
    artifacts only when asked for."""
    changes: dict[str, object] = {}
    if history_length is not None and task.history is not None:
        changes["history"] = task.history[-history_length:] if history_length > 0 else None
    if not include_artifacts:
        changes["artifacts"] = None
    return task.model_copy(update=changes) if changes else task
