"""meshctl's fold of a `send` stream is the mesh's one fold and reproduces the one meshctl had of its own (kept
below as the oracle): status replaces, artifact chunks extend by id, snapshots replace, the history is the
snapshots'. Pure: no mesh needed."""

from __future__ import annotations

import pytest
from a2a.types import a2a_pb2 as pb
from google.protobuf.json_format import MessageToDict, ParseDict
from hypothesis import given, settings
from hypothesis import strategies as st
from meshctl.client import CliError
from meshctl.send import fold

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


def old_fold(task: pb.Task | None, event: pb.StreamResponse) -> pb.Task | None:
    """meshctl's own fold before the one in a2amesh, as it was."""
    kind = event.WhichOneof("payload")
    if kind == "task":
        folded = pb.Task()
        folded.CopyFrom(event.task)
        return folded
    if kind not in ("status_update", "artifact_update"):
        return task
    update = getattr(event, kind)
    task = task or pb.Task(id=update.task_id, context_id=update.context_id)
    if kind == "status_update":
        task.status.CopyFrom(update.status)
        return task
    artifact = update.artifact
    existing = next((a for a in task.artifacts if a.artifact_id and a.artifact_id == artifact.artifact_id), None)
    if existing is None:
        task.artifacts.add().CopyFrom(artifact)
    elif update.append:
        existing.parts.extend(artifact.parts)
    else:
        existing.CopyFrom(artifact)
    return task


def model(cls: type, **fields: st.SearchStrategy) -> st.SearchStrategy:
    """`cls(**fields)`: unlike `st.builds`, never also fills a pydantic field by its alias (`taskId`)."""
    return st.fixed_dictionaries(fields).map(lambda values: cls(**values))


TASK_ID, CONTEXT_ID = "t1", "c1"
few_ids = st.sampled_from(["a", "b", "c"])
parts = st.lists(model(Part, text=st.text(max_size=4)) | model(Part, data=st.integers(0, 9)), max_size=2)
messages = model(Message, message_id=few_ids, role=st.sampled_from(Role), parts=parts, task_id=st.just(TASK_ID))
statuses = model(TaskStatus, state=st.sampled_from(TaskState), message=st.none() | messages)
artifacts = model(Artifact, artifact_id=few_ids, name=st.none() | st.just("report"), parts=parts)
chunks = model(Artifact, artifact_id=few_ids, parts=parts)
snapshots = model(
    Task,
    id=st.just(TASK_ID),
    context_id=st.just(CONTEXT_ID),
    status=statuses,
    artifacts=st.none() | st.lists(artifacts, max_size=3),
    history=st.none() | st.lists(messages, max_size=3),
)
events = st.one_of(
    snapshots.map(lambda task: StreamResponse(task=task)),
    messages.map(lambda message: StreamResponse(message=message)),
    model(TaskStatusUpdateEvent, task_id=st.just(TASK_ID), context_id=st.just(CONTEXT_ID), status=statuses).map(
        lambda update: StreamResponse(status_update=update)
    ),
    model(
        TaskArtifactUpdateEvent,
        task_id=st.just(TASK_ID),
        context_id=st.just(CONTEXT_ID),
        artifact=chunks,
        append=st.none() | st.booleans(),
    ).map(lambda update: StreamResponse(artifact_update=update)),
)


def as_pb(event: StreamResponse) -> pb.StreamResponse:
    return ParseDict(event.to_wire(), pb.StreamResponse())


@settings(max_examples=200, deadline=None)
@given(first=snapshots, stream=st.lists(events, max_size=8))
def test_fold_reproduces_meshctls_own(first: Task, stream: list[StreamResponse]) -> None:
    """From nothing, as `meshctl send` starts: a stream's first event is the task (A2A streams start with the
    Task or a Message; a task first seen through an artifact update is now WORKING, it was unspecified)."""
    old: pb.Task | None = None
    new: pb.Task | None = None
    for event in [StreamResponse(task=first), *stream]:
        old, new = old_fold(old, as_pb(event)), fold(new, as_pb(event))
        assert (None if new is None else MessageToDict(new)) == (None if old is None else MessageToDict(old))


def test_a_status_message_stays_out_of_the_history() -> None:
    """meshctl shows the history the agent's snapshots carried, not the notes of status updates."""
    note = Message(message_id="m", role=Role.AGENT, parts=[Part(text="working on it")])
    start = fold(None, as_pb(StreamResponse(task=Task(id=TASK_ID, status=TaskStatus(state=TaskState.SUBMITTED)))))
    update = TaskStatusUpdateEvent(task_id=TASK_ID, status=TaskStatus(state=TaskState.WORKING, message=note))
    folded = fold(start, as_pb(StreamResponse(status_update=update)))
    assert folded is not None
    assert folded.status.state == pb.TASK_STATE_WORKING and folded.status.message.parts[0].text == "working on it"
    assert not folded.history


def test_a_direct_reply_leaves_no_task() -> None:
    reply = Message(message_id="m", role=Role.AGENT, parts=[Part(text="hi")])
    assert fold(None, as_pb(StreamResponse(message=reply))) is None


def test_an_event_that_is_not_valid_a2a_is_a_clear_error() -> None:
    """An artifact without its required id cannot be read as the mesh's model: one line, no traceback."""
    start = fold(None, as_pb(StreamResponse(task=Task(id=TASK_ID, status=TaskStatus(state=TaskState.WORKING)))))
    event = pb.StreamResponse(artifact_update=pb.TaskArtifactUpdateEvent(task_id=TASK_ID, artifact=pb.Artifact()))
    with pytest.raises(CliError, match="not valid A2A"):
        fold(start, event)
