"""A finished task is kept compactly (its final Task as JSON): whatever is asked of it later must be what the full
record would have answered."""

from __future__ import annotations

from hypothesis import given, settings

from a2amesh.binding.tasks import FinishedTask, TaskRecord
from a2amesh.models import JsonRpcRequest, Task

from .strategies import ours


@settings(max_examples=200, deadline=None)
@given(task=ours.tasks)
def test_a_finished_task_answers_as_its_full_record_would(task: Task) -> None:
    record = TaskRecord(task=task, request=JsonRpcRequest(jsonrpc="2.0", method="SendMessage"))
    kept = FinishedTask.of(record)

    assert kept.task.to_wire() == task.to_wire()
    assert (kept.id, kept.context_id, kept.current_state) == (record.id, record.context_id, record.current_state)
    assert not kept.active and kept.runner is None and kept.subscribers == []
