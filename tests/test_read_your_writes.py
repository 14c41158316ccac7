"""Read-your-writes: every task id the mesh hands a client reads back its latest state at once. A workflow's
artifact names its child tasks; right after the parent COMPLETED, GetTask and ListTasks on those ids answer them
COMPLETED through the coordinator (never TaskNotFound, never WORKING), whatever the store's lag."""

from __future__ import annotations

from a2a.types import a2a_pb2 as pb
from google.protobuf.json_format import MessageToDict

from tests.conftest import collect, send_request, user_message

COMPLETED = pb.TASK_STATE_COMPLETED
ROUNDS = 3
"""Fan-outs in a row: each is a fresh chance for the store to lag behind the children's ends."""


def child_ids(parent: pb.Task) -> list[str]:
    """The child task ids a fan-out's merged artifact names (summary.childTaskIds)."""
    for artifact in parent.artifacts:
        for part in artifact.parts:
            if part.HasField("data"):
                data = MessageToDict(part)["data"]
                if isinstance(data, dict) and "childTaskIds" in data:
                    return list(data["childTaskIds"])
    raise AssertionError(f"no childTaskIds in the parent's artifacts: {parent.artifacts}")


async def test_workflow_children_read_back_completed_as_soon_as_the_parent_completes(make_client) -> None:
    client = make_client()
    for round_number in range(ROUNDS):
        text = f"what is a retained message? ({round_number})\nwhat is a last will?\nwhat does QoS 1 guarantee?"
        [event] = await collect(client, send_request(user_message(text), skill="workflow.fanout"))
        parent = event.task
        assert parent.status.state == COMPLETED, parent.status
        children = child_ids(parent)
        assert len(children) == 3, children
        # straight away, no polling: each id the artifact named answers with its final state
        states = {
            child_id: (await client.get_task(pb.GetTaskRequest(id=child_id))).status.state for child_id in children
        }
        assert set(states.values()) == {COMPLETED}, {k: pb.TaskState.Name(v) for k, v in states.items()}
        listed = await client.list_tasks(pb.ListTasksRequest(context_id=parent.context_id))
        listed_states = {task.id: task.status.state for task in listed.tasks if task.id in children}
        not_done = {k: pb.TaskState.Name(v) for k, v in listed_states.items() if v != COMPLETED}
        assert not not_done, f"ListTasks shows children of a COMPLETED parent unfinished: {not_done}"
