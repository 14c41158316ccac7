"""How one stream event changes a task snapshot: the one fold every reader of a task's events uses (the
responder's record, the coordinator's relay and workflow steps, the task store, meshctl).

A pure function over the models, no I/O. Tasks are replaced, never changed in place: the result is a new Task
(or the input itself when the event changes nothing), sharing unchanged parts with the input, so a snapshot
already handed out stays as it was without a deep copy. The event's models are taken as they are, not copied.

Always:
- `statusUpdate` sets the status; its message joins the history.
- `artifactUpdate` adds the artifact, replaces one with the same id, or (append=true) extends its parts; the
  descriptive fields a chunk sets (name, description, extensions) override, its metadata is merged in.
- `task` replaces the snapshot.
- A task first seen through an update is created from it (SUBMITTED for a status, WORKING for an artifact), and
  an update fills in the context id when the snapshot has none.

`FoldRules` add what a system of record needs (the task store's `RECORD`): keeping a finished task finished,
history without repeats, snapshots merged with what is known, and direct messages kept in the history.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, overload

from a2amesh.models.core import Artifact, Message, StreamResponse, Task, TaskArtifactUpdateEvent, TaskState, TaskStatus


@dataclass(frozen=True, slots=True)
class FoldRules:
    """The options of `fold`; the defaults follow a stream as it comes (what a responder or requester does)."""

    keep_terminal: bool = False
    """A finished task keeps its final state: a status or snapshot with any other state is refused, and `fold`
    returns the task it was given (the same object; see `refuses`)."""
    dedupe_history: bool = False
    """A message joins the history only when no message with its id is there yet."""
    merge_snapshots: bool = False
    """A snapshot keeps what only the fold knew: its history is followed by the messages it lacks, known
    artifacts stay (replaced by the snapshot's of the same id), and the known context id and metadata are kept
    when the snapshot has none."""
    record_messages: bool = False
    """A direct message with a taskId joins that task's history (one without a taskId is a ValueError);
    otherwise messages leave the task as it is."""
    status_messages: bool = True
    """A status's message joins the history (meshctl shows the history exactly as the agent's snapshots had it,
    so it turns this off)."""


FOLLOW = FoldRules()
"""Follow a stream as it comes: the responder's record, the coordinator's relay and workflow steps."""

RECORD = FoldRules(keep_terminal=True, dedupe_history=True, merge_snapshots=True, record_messages=True)
"""The task store's rules: the record never reopens a finished task nor forgets what it has seen."""


def refuses(rules: FoldRules, current: Task | None, event: StreamResponse) -> bool:
    """Whether `rules` refuse `event` for `current` (it would reopen or rewrite a finished task)."""
    if not rules.keep_terminal or current is None:
        return False
    new = state_set_by(event)
    return new is not None and blocks_transition(current.status.state, new)


def blocks_transition(current: TaskState, new: TaskState) -> bool:
    """Whether moving from `current` to `new` would reopen (or rewrite) a finished task."""
    return current.is_terminal and new != current


@overload
def fold(task: Task, event: StreamResponse, rules: FoldRules = FOLLOW) -> Task: ...
@overload
def fold(task: None, event: StreamResponse, rules: FoldRules = FOLLOW) -> Task | None: ...
def fold(task: Task | None, event: StreamResponse, rules: FoldRules = FOLLOW) -> Task | None:
    """`task` (None when not known yet) after `event`. Never mutates its inputs.

    None only when `task` is None and the event is a message the rules leave out."""
    if event.status_update is not None:
        update = event.status_update
        base = task or _placeholder(update.task_id, update.context_id, TaskState.SUBMITTED)
        status = update.status
        if rules.keep_terminal and blocks_transition(base.status.state, status.state):
            return base
        history = base.history
        if status.message is not None and rules.status_messages:
            history = _add_message(history, status.message, rules)
        return _replace(base, update.context_id, status=status, history=history)
    if event.artifact_update is not None:
        update = event.artifact_update
        base = task or _placeholder(update.task_id, update.context_id, TaskState.WORKING)
        return _replace(base, update.context_id, artifacts=apply_artifact(base.artifacts, update))
    if event.task is not None:
        return _apply_snapshot(task, event.task, rules)
    message = event.message
    if not rules.record_messages:
        return task
    if message is None or not message.task_id:
        raise ValueError("a message without taskId belongs to no task")
    base = task or _placeholder(message.task_id, message.context_id, TaskState.SUBMITTED)
    return _replace(base, message.context_id, history=_add_message(base.history, message, rules))


def state_set_by(event: StreamResponse) -> TaskState | None:
    """The state a snapshot or status update moves its task to (None for the other events)."""
    if event.status_update is not None:
        return event.status_update.status.state
    if event.task is not None:
        return event.task.status.state
    return None


def _placeholder(task_id: str, context_id: str | None, state: TaskState) -> Task:
    """A task first seen through an update (its earlier events were never received)."""
    return Task(id=task_id, context_id=context_id or None, status=TaskStatus(state=state))


def _replace(task: Task, context_id: str | None, **changes: Any) -> Task:
    """One copy of `task` with `changes`, and the update's context id when the task has none (first one wins)."""
    if context_id and not task.context_id:
        changes["context_id"] = context_id
    return task.model_copy(update=changes)


def _apply_snapshot(current: Task | None, snapshot: Task, rules: FoldRules) -> Task:
    if current is None:
        return snapshot
    if rules.keep_terminal and blocks_transition(current.status.state, snapshot.status.state):
        return current
    if not rules.merge_snapshots:
        return snapshot
    return snapshot.model_copy(
        update={
            "context_id": snapshot.context_id or current.context_id,
            "history": merge_history(current.history, snapshot.history),
            "artifacts": merge_artifacts(current.artifacts, snapshot.artifacts),
            "metadata": snapshot.metadata if snapshot.metadata is not None else current.metadata,
        }
    )


def _add_message(history: list[Message] | None, message: Message, rules: FoldRules) -> list[Message]:
    """`history` with `message` appended (unless the rules dedupe and a message with its id is there)."""
    if rules.dedupe_history and history and any(known.message_id == message.message_id for known in history):
        return list(history)
    return [*(history or []), message]


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
    """`artifacts` after one artifact update (a new list; the artifacts in it are shared, never changed)."""
    incoming = update.artifact
    result = list(artifacts or [])
    for index, existing in enumerate(result):
        if existing.artifact_id == incoming.artifact_id:
            result[index] = _extend(existing, incoming) if update.append else incoming
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
