"""`a2amesh.models.fold` reproduces each fold the mesh had before there was one: the responder's record
(`TaskRecord.apply`, also borrowed by the coordinator) with `FOLLOW`, the task store's `apply_event` with
`RECORD`. The old implementations are kept below, as they were, as the oracles."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

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
from a2amesh.models.fold import FOLLOW, RECORD, fold, refuses

# -- the old implementations, verbatim in behaviour ---------------------------------------------------------------


def old_record_apply(task: Task, item: StreamResponse) -> Task:
    """`TaskRecord.apply` before the one fold (the responder, and the coordinator's borrowed record)."""
    if item.status_update is not None:
        status = item.status_update.status
        history = task.history if status.message is None else [*(task.history or []), status.message]
        return task.model_copy(update={"status": status, "history": history})
    if item.artifact_update is not None:
        update = item.artifact_update
        artifacts = list(task.artifacts or [])
        for index, existing in enumerate(artifacts):
            if existing.artifact_id == update.artifact.artifact_id:
                if update.append:
                    artifacts[index] = existing.model_copy(update={"parts": [*existing.parts, *update.artifact.parts]})
                else:
                    artifacts[index] = update.artifact
                break
        else:
            artifacts.append(update.artifact)
        return task.model_copy(update={"artifacts": artifacts})
    if item.task is not None:
        return item.task
    return task


def old_store_apply(current: Task | None, event: StreamResponse) -> tuple[Task, bool]:
    """The task store's `apply_event` before the one fold: the snapshot afterwards and whether it applied."""

    def new_task(task_id: str, context_id: str | None, state: TaskState = TaskState.SUBMITTED) -> Task:
        return Task(id=task_id, context_id=context_id or None, status=TaskStatus(state=state))

    def with_context(task: Task, context_id: str | None) -> Task:
        if task.context_id or not context_id:
            return task
        return task.model_copy(update={"context_id": context_id})

    def add_message(history: list[Message] | None, message: Message) -> list[Message]:
        known = list(history or [])
        if any(existing.message_id == message.message_id for existing in known):
            return known
        return [*known, message.model_copy(deep=True)]

    def blocks(current: TaskState, new: TaskState) -> bool:
        return current.is_terminal and new != current

    if event.task is not None:
        incoming = event.task.model_copy(deep=True)
        if current is None:
            return incoming, True
        if blocks(current.status.state, incoming.status.state):
            return current, False
        ids = {m.message_id for m in incoming.history or []}
        history = (
            current.history
            if incoming.history is None
            else [*incoming.history, *(m for m in current.history or [] if m.message_id not in ids)]
        )
        artifacts = current.artifacts
        if incoming.artifacts:
            by_id = {a.artifact_id: a for a in incoming.artifacts}
            known_ids = {a.artifact_id for a in current.artifacts or []}
            artifacts = [by_id.get(a.artifact_id, a) for a in current.artifacts or []] + [
                a for a in incoming.artifacts if a.artifact_id not in known_ids
            ]
        merged = incoming.model_copy(
            update={
                "context_id": incoming.context_id or current.context_id,
                "history": history,
                "artifacts": artifacts,
                "metadata": incoming.metadata if incoming.metadata is not None else current.metadata,
            }
        )
        return merged, True
    if event.status_update is not None:
        update = event.status_update
        base = current or new_task(update.task_id, update.context_id)
        if blocks(base.status.state, update.status.state):
            return base, False
        status = update.status
        history = add_message(base.history, status.message) if status.message is not None else base.history
        updated = base.model_copy(update={"status": status.model_copy(deep=True), "history": history})
        return with_context(updated, update.context_id), True
    if event.artifact_update is not None:
        update = event.artifact_update
        base = current or new_task(update.task_id, update.context_id, TaskState.WORKING)
        incoming_artifact = update.artifact.model_copy(deep=True)
        result = list(base.artifacts or [])
        for index, existing in enumerate(result):
            if existing.artifact_id != incoming_artifact.artifact_id:
                continue
            if update.append:
                changes: dict[str, object] = {"parts": [*existing.parts, *incoming_artifact.parts]}
                for name in ("name", "description", "extensions"):
                    if getattr(incoming_artifact, name) is not None:
                        changes[name] = getattr(incoming_artifact, name)
                if incoming_artifact.metadata:
                    changes["metadata"] = {**(existing.metadata or {}), **incoming_artifact.metadata}
                result[index] = existing.model_copy(update=changes)
            else:
                result[index] = incoming_artifact
            break
        else:
            result.append(incoming_artifact)
        return with_context(base.model_copy(update={"artifacts": result}), update.context_id), True
    message = event.message
    if message is None or not message.task_id:
        raise ValueError("a message without taskId belongs to no task")
    base = current or new_task(message.task_id, message.context_id)
    return with_context(
        base.model_copy(update={"history": add_message(base.history, message)}), message.context_id
    ), True


# -- events about one task, with few ids so they collide ----------------------------------------------------------


def model(cls: type, **fields: st.SearchStrategy) -> st.SearchStrategy:
    """`cls(**fields)`: unlike `st.builds`, never also fills a pydantic field by its alias (`taskId`)."""
    return st.fixed_dictionaries(fields).map(lambda values: cls(**values))


TASK_ID = "t1"
few_ids = st.sampled_from(["a", "b", "c"])
contexts = st.sampled_from(["", "ctx-1", "ctx-2"])


texts = st.text(max_size=4)
parts = st.lists(model(Part, text=texts), max_size=2)
messages = model(
    Message,
    message_id=few_ids,
    role=st.sampled_from(Role),
    parts=parts,
    task_id=st.sampled_from([None, TASK_ID]),
)
artifacts = model(
    Artifact,
    artifact_id=few_ids,
    name=st.none() | texts,
    description=st.none() | texts,
    parts=parts,
    metadata=st.none() | st.dictionaries(st.sampled_from(["x", "y"]), st.integers(0, 3), max_size=2),
    extensions=st.none() | st.lists(texts, max_size=1),
)
plain_chunks = model(Artifact, artifact_id=few_ids, parts=parts)
statuses = model(TaskStatus, state=st.sampled_from(TaskState), message=st.none() | messages)


def snapshots(context: st.SearchStrategy[str | None]) -> st.SearchStrategy[Task]:
    return model(
        Task,
        id=st.just(TASK_ID),
        context_id=context,
        status=statuses,
        artifacts=st.none() | st.lists(artifacts, max_size=3),
        history=st.none() | st.lists(messages, max_size=3),
        metadata=st.none() | st.just({"k": 1}),
    )


def events(
    chunks: st.SearchStrategy[Artifact], snapshot_contexts: st.SearchStrategy[str | None]
) -> st.SearchStrategy[StreamResponse]:
    status_updates = model(TaskStatusUpdateEvent, task_id=st.just(TASK_ID), context_id=contexts, status=statuses)
    artifact_updates = model(
        TaskArtifactUpdateEvent,
        task_id=st.just(TASK_ID),
        context_id=contexts,
        artifact=chunks,
        append=st.none() | st.booleans(),
    )
    return st.one_of(
        status_updates.map(lambda u: StreamResponse(status_update=u)),
        artifact_updates.map(lambda u: StreamResponse(artifact_update=u)),
        snapshots(snapshot_contexts).map(lambda t: StreamResponse(task=t)),
        messages.map(lambda m: StreamResponse(message=m)),
    )


# -- the properties -------------------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(start=snapshots(st.just("ctx-0")), stream=st.lists(events(plain_chunks, st.just("ctx-0")), max_size=8))
def test_follow_reproduces_the_responders_record(start: Task, stream: list[StreamResponse]) -> None:
    """The responder's tasks (and the snapshots it sends) always carry a context id, so FOLLOW's context fill
    never applies to them; its chunks name nothing new (see the test below for a chunk that does)."""
    old = new = start
    for event in stream:
        old, new = old_record_apply(old, event), fold(new, event)
        assert new == old


@settings(max_examples=200, deadline=None)
@given(
    start=st.none() | snapshots(st.none() | contexts),
    stream=st.lists(events(artifacts, st.none() | contexts), max_size=8),
)
def test_record_reproduces_the_task_stores_apply(start: Task | None, stream: list[StreamResponse]) -> None:
    old: Task | None = start
    new: Task | None = start
    for event in stream:
        if event.message is not None and not event.message.task_id:
            try:
                fold(new, event, RECORD)
            except ValueError:
                continue
            raise AssertionError("a message without taskId was folded into a task")
        old_task, applied = old_store_apply(old, event)
        assert refuses(RECORD, new, event) is not applied
        new = fold(new, event, RECORD)
        assert new == old_task
        old = old_task


@settings(max_examples=200, deadline=None)
@given(start=snapshots(st.just("ctx-0")), event=events(artifacts, st.none() | contexts))
def test_follow_replaces_never_mutates(start: Task, event: StreamResponse) -> None:
    """Tasks are replaced, not changed: the input snapshot reads the same after a fold."""
    before = start.model_copy(deep=True)
    after = fold(start, event)
    assert start == before
    if event.status_update is not None:
        assert after.artifacts is start.artifacts, "a status update shares the artifacts, it does not copy them"


def test_a_chunk_sets_the_descriptive_fields_it_carries() -> None:
    """The one place FOLLOW differs from the old responder record: a chunk naming its artifact renames it, as the
    task store always did, so the responder, the coordinator and the store agree on the artifact."""
    first = Artifact(artifact_id="a", name="draft", parts=[], metadata={"x": 1})
    chunk = Artifact(artifact_id="a", name="final", parts=[], metadata={"y": 2})
    task = Task(id=TASK_ID, context_id="c", status=TaskStatus(state=TaskState.WORKING), artifacts=[first])
    update = TaskArtifactUpdateEvent(task_id=TASK_ID, artifact=chunk, append=True)
    folded = fold(task, StreamResponse(artifact_update=update))
    assert folded.artifacts == [Artifact(artifact_id="a", name="final", parts=[], metadata={"x": 1, "y": 2})]


def test_record_keeps_a_finished_task_finished() -> None:
    done = Task(id=TASK_ID, status=TaskStatus(state=TaskState.COMPLETED))
    reopen = StreamResponse(
        status_update=TaskStatusUpdateEvent(task_id=TASK_ID, status=TaskStatus(state=TaskState.WORKING))
    )
    assert refuses(RECORD, done, reopen)
    assert fold(done, reopen, RECORD) is done
    assert not refuses(FOLLOW, done, reopen)
    assert fold(done, reopen).status.state is TaskState.WORKING


def test_follow_leaves_a_message_out() -> None:
    message = Message(message_id="m", role="ROLE_AGENT", task_id=TASK_ID)
    assert fold(None, StreamResponse(message=message)) is None
    folded = fold(None, StreamResponse(message=message), RECORD)
    assert folded is not None and folded.history == [message]
