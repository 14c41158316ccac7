"""The merge rules of apply.py, on the models alone (no database, no broker)."""

from __future__ import annotations

import pytest

from a2amesh.models import (
    Artifact,
    Message,
    Part,
    Role,
    StreamResponse,
    Task,
    TaskArtifactUpdateEvent,
    TaskState,
    TaskStatus,
    TaskStatusUpdateEvent,
)
from a2amesh.models.fold import apply_artifact, merge_history
from mesh_taskstore.apply import EventKind, apply_event, kind_of, trim


def msg(message_id: str, text: str = "hi", role: Role = Role.AGENT) -> Message:
    return Message(message_id=message_id, role=role, parts=[Part(text=text)])


def snapshot(state: TaskState = TaskState.SUBMITTED, **fields: object) -> StreamResponse:
    task = Task(id="t1", context_id="c1", status=TaskStatus(state=state), **fields)
    return StreamResponse(task=task)


def status(state: TaskState, message: Message | None = None, context_id: str = "c1") -> StreamResponse:
    update = TaskStatusUpdateEvent(task_id="t1", context_id=context_id, status=TaskStatus(state=state, message=message))
    return StreamResponse(status_update=update)


def chunk(artifact_id: str, text: str, append: bool | None = None, name: str | None = None) -> StreamResponse:
    artifact = Artifact(artifact_id=artifact_id, name=name, parts=[Part(text=text)])
    return StreamResponse(artifact_update=TaskArtifactUpdateEvent(task_id="t1", artifact=artifact, append=append))


def texts(artifact: Artifact) -> list[str | None]:
    return [part.text for part in artifact.parts]


def run(*events: StreamResponse, start: Task | None = None) -> Task:
    task = start
    for event in events:
        task = apply_event(task, event).task
    assert task is not None
    return task


def test_kinds() -> None:
    assert kind_of(snapshot()) is EventKind.TASK
    assert kind_of(status(TaskState.WORKING)) is EventKind.STATUS_UPDATE
    assert kind_of(chunk("a", "x")) is EventKind.ARTIFACT_UPDATE
    assert kind_of(StreamResponse(message=Message(message_id="m", task_id="t1", role=Role.USER))) is EventKind.MESSAGE


def test_first_snapshot_is_taken_as_is() -> None:
    result = apply_event(None, snapshot(history=[msg("u1", role=Role.USER)]))
    assert result.applied
    assert result.task.status.state is TaskState.SUBMITTED
    assert [m.message_id for m in result.task.history or []] == ["u1"]
    assert result.status == result.task.status


def test_full_lifecycle() -> None:
    task = run(
        snapshot(history=[msg("u1", role=Role.USER)]),
        status(TaskState.WORKING, msg("a1", "working")),
        chunk("out", "Hello, "),
        chunk("out", "world", append=True),
        status(TaskState.COMPLETED, msg("a2", "done")),
    )
    assert task.status.state is TaskState.COMPLETED
    assert [m.message_id for m in task.history or []] == ["u1", "a1", "a2"]
    assert task.artifacts is not None and len(task.artifacts) == 1
    assert texts(task.artifacts[0]) == ["Hello, ", "world"]


def test_status_message_is_not_added_twice() -> None:
    task = run(snapshot(), status(TaskState.WORKING, msg("a1")), status(TaskState.WORKING, msg("a1")))
    assert [m.message_id for m in task.history or []] == ["a1"]


def test_task_first_seen_through_updates_is_created() -> None:
    from_status = run(status(TaskState.WORKING, msg("a1")))
    assert from_status.id == "t1" and from_status.context_id == "c1"
    assert from_status.status.state is TaskState.WORKING
    assert [m.message_id for m in from_status.history or []] == ["a1"]

    from_artifact = run(chunk("out", "x"))
    assert from_artifact.status.state is TaskState.WORKING
    assert from_artifact.artifacts is not None and texts(from_artifact.artifacts[0]) == ["x"]
    assert from_artifact.context_id is None  # the artifact event carried an empty context id

    message = Message(message_id="u1", task_id="t1", context_id="c9", role=Role.USER, parts=[Part(text="q")])
    from_message = run(StreamResponse(message=message))
    assert from_message.status.state is TaskState.SUBMITTED
    assert from_message.context_id == "c9"


def test_message_without_task_is_refused() -> None:
    with pytest.raises(ValueError):
        apply_event(None, StreamResponse(message=msg("m")))


def test_message_event_dedupes_by_id() -> None:
    message = Message(message_id="u2", task_id="t1", role=Role.USER, parts=[Part(text="more")])
    task = run(snapshot(history=[msg("u1")]), StreamResponse(message=message), StreamResponse(message=message))
    assert [m.message_id for m in task.history or []] == ["u1", "u2"]


def test_terminal_state_is_kept() -> None:
    done = run(snapshot(), status(TaskState.COMPLETED))
    for event in (status(TaskState.WORKING, msg("late")), snapshot(TaskState.WORKING), status(TaskState.FAILED)):
        result = apply_event(done, event)
        assert not result.applied
        assert result.task is done
        assert result.status is None
        assert result.note and "TASK_STATE_COMPLETED" in result.note


def test_terminal_state_can_be_restated() -> None:
    """An agent's final snapshot after its COMPLETED status update is merged (same state, not a reopening)."""
    done = run(snapshot(), status(TaskState.COMPLETED, msg("a1")))
    final = snapshot(TaskState.COMPLETED, artifacts=[Artifact(artifact_id="out", parts=[Part(text="x")])])
    result = apply_event(done, final)
    assert result.applied
    assert result.task.artifacts is not None and len(result.task.artifacts) == 1
    assert [m.message_id for m in result.task.history or []] == ["a1"]  # the record does not forget a message


def test_interrupted_state_can_resume() -> None:
    task = run(snapshot(), status(TaskState.INPUT_REQUIRED), status(TaskState.WORKING))
    assert task.status.state is TaskState.WORKING


def test_artifacts_after_completion_are_kept() -> None:
    task = run(snapshot(), status(TaskState.COMPLETED), chunk("late", "x"))
    assert task.status.state is TaskState.COMPLETED
    assert [a.artifact_id for a in task.artifacts or []] == ["late"]


def test_snapshot_without_artifacts_keeps_known_ones() -> None:
    task = run(snapshot(), chunk("out", "x"), snapshot(TaskState.WORKING, metadata={"k": 1}))
    assert [a.artifact_id for a in task.artifacts or []] == ["out"]
    assert task.metadata == {"k": 1}


def test_snapshot_artifacts_replace_same_id_and_keep_others() -> None:
    newer = Artifact(artifact_id="a", parts=[Part(text="new")])
    other = Artifact(artifact_id="c", parts=[Part(text="c")])
    task = run(snapshot(), chunk("a", "old"), chunk("b", "b"), snapshot(TaskState.WORKING, artifacts=[newer, other]))
    assert [(a.artifact_id, texts(a)) for a in task.artifacts or []] == [
        ("a", ["new"]),
        ("b", ["b"]),
        ("c", ["c"]),
    ]


def test_snapshot_metadata_absent_keeps_known() -> None:
    task = run(snapshot(metadata={"k": 1}), snapshot(TaskState.WORKING))
    assert task.metadata == {"k": 1}


def test_merge_history_keeps_order_and_unknown_messages() -> None:
    merged = merge_history([msg("a"), msg("x")], [msg("a"), msg("b")])
    assert [m.message_id for m in merged or []] == ["a", "b", "x"]
    assert merge_history([msg("a")], None) is not None
    assert merge_history(None, None) is None


def test_artifact_append_replace_and_add() -> None:
    first = TaskArtifactUpdateEvent(task_id="t1", artifact=Artifact(artifact_id="a", name="n", parts=[Part(text="1")]))
    artifacts = apply_artifact(None, first)
    more = TaskArtifactUpdateEvent(
        task_id="t1", artifact=Artifact(artifact_id="a", parts=[Part(text="2")], metadata={"m": 1}), append=True
    )
    artifacts = apply_artifact(artifacts, more)
    assert texts(artifacts[0]) == ["1", "2"] and artifacts[0].name == "n" and artifacts[0].metadata == {"m": 1}
    replace = TaskArtifactUpdateEvent(task_id="t1", artifact=Artifact(artifact_id="a", parts=[Part(text="R")]))
    assert texts(apply_artifact(artifacts, replace)[0]) == ["R"]
    orphan_chunk = TaskArtifactUpdateEvent(
        task_id="t1", artifact=Artifact(artifact_id="b", parts=[Part(text="b")]), append=True
    )
    result = apply_artifact(artifacts, orphan_chunk)
    assert [a.artifact_id for a in result] == ["a", "b"]
    assert texts(artifacts[0]) == ["1", "2"]  # inputs are never mutated


def test_inputs_are_not_mutated() -> None:
    start = run(snapshot(history=[msg("u1")]))
    before = start.to_json()
    run(status(TaskState.WORKING, msg("a1")), chunk("out", "x"), start=start)
    assert start.to_json() == before


def test_context_id_is_filled_in_once() -> None:
    task = run(status(TaskState.WORKING, context_id=""), status(TaskState.WORKING, context_id="c2"))
    assert task.context_id == "c2"
    task = run(status(TaskState.WORKING, context_id="c3"), start=task)
    assert task.context_id == "c2"


def test_trim() -> None:
    task = run(snapshot(history=[msg("1"), msg("2"), msg("3")]), chunk("out", "x"))
    assert [m.message_id for m in trim(task, 2).history or []] == ["2", "3"]
    assert trim(task, 0).history is None
    assert trim(task, 10).history == task.history
    assert trim(task).artifacts == task.artifacts
    assert trim(task, include_artifacts=False).artifacts is None
    assert "history" not in trim(task, 0).to_wire()
