"""How one task event changes the store's snapshot: `a2amesh.models.fold` with the record's rules (`RECORD`),
wrapped with what the store keeps about each event (applied or not, and why).

The record's rules, on top of following the stream:
- `task`: the snapshot wins for status, context and metadata; history and artifacts are merged so the record
  never forgets a message or an artifact it has already seen (the snapshot's order first, then what only the
  record knew; artifacts with the same id are replaced by the snapshot's).
- history is deduplicated by messageId; a `message` with a taskId joins it.
- A terminal task keeps its terminal state: a status (or snapshot) with any other state is not applied. The
  caller still records the event, so the attempt stays visible.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from a2amesh.models import StreamResponse, Task, TaskStatus
from a2amesh.models.fold import RECORD, fold, refuses, state_set_by


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


def apply_event(current: Task | None, event: StreamResponse) -> Applied:
    """Apply `event` to `current` (None when the task is not known yet) by the record's rules
    (`a2amesh.models.fold.RECORD`). Never mutates its inputs.

    Raises ValueError for an event that names no task (a direct message without taskId)."""
    if current is not None and refuses(RECORD, current, event):
        new = state_set_by(event)
        assert new is not None  # only a status or a snapshot is ever refused
        note = f"task {current.id} is {current.status.state.value}; not moving it to {new.value}"
        return Applied(current, applied=False, note=note)
    task = fold(current, event, RECORD)
    if task is None:  # RECORD keeps every message with a taskId and raises for one without
        raise ValueError("a message without taskId belongs to no task")
    sets_status = event.task is not None or event.status_update is not None
    return Applied(task, status=task.status if sets_status else None)


def trim(task: Task, history_length: int | None = None, include_artifacts: bool = True) -> Task:
    """A view of `task` for a reader: the last `history_length` messages (none for 0, all for None), and
    artifacts only when asked for. `trim_wire` is the same on the wire JSON (the listing's, which never parses a
    model); a test holds the two equal."""
    changes: dict[str, object] = {}
    if history_length is not None and task.history is not None:
        changes["history"] = task.history[-history_length:] if history_length > 0 else None
    if not include_artifacts:
        changes["artifacts"] = None
    return task.model_copy(update=changes) if changes else task


def trim_wire(task: dict[str, Any], history_length: int | None, include_artifacts: bool) -> dict[str, Any]:
    """`trim` on a snapshot's wire JSON, in place: a stored snapshot is a model's own JSON (the write path
    writes `Task.to_json()`), so dropping keys gives what trimming the model and writing it again would."""
    history = task.get("history")
    if history_length is not None and history is not None:
        if history_length > 0:
            task["history"] = history[-history_length:]
        else:
            del task["history"]
    if not include_artifacts:
        task.pop("artifacts", None)
    return task
