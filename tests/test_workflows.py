"""Workflows across agents: pipeline and fan-out, linked child tasks, multi-turn and cancel propagation."""

from __future__ import annotations

import uuid

import httpx
from a2a.types import a2a_pb2 as pb
from google.protobuf.json_format import MessageToDict

from devstack.stack import Stack
from tests.conftest import collect, eventually, send_request, user_message

COMPLETED, INPUT_REQUIRED = pb.TASK_STATE_COMPLETED, pb.TASK_STATE_INPUT_REQUIRED


async def children_of(mesh: Stack, http: httpx.AsyncClient, parent: pb.Task, count: int) -> list[dict]:
    """The recorded child tasks of a parent: same context, referencing the parent (waits for the store)."""

    async def linked() -> list[dict] | None:
        page = (
            await http.get(f"{mesh.taskstore_url}/tasks", params={"scope": "all", "contextId": parent.context_id})
        ).json()
        found = [
            task
            for task in page["tasks"]
            if task["id"] != parent.id and parent.id in task["history"][0].get("referenceTaskIds", [])
        ]
        return found if len(found) == count else None

    return await eventually(linked, what=f"{count} linked child tasks in the store")


def statuses(events: list[pb.StreamResponse]) -> list[str]:
    return [
        " ".join(part.text for part in event.status_update.status.message.parts)
        for event in events
        if event.HasField("status_update")
    ]


async def test_pipeline_researches_writes_and_reviews_as_linked_child_tasks(
    mesh: Stack, make_client, http: httpx.AsyncClient
) -> None:
    request = send_request(
        user_message("how do retained messages work"), skill="workflow.pipeline", audience="engineers"
    )
    events = await collect(make_client(streaming=True), request)

    final = events[-1].status_update
    assert final.status.state == COMPLETED, statuses(events)
    steps = [text for text in statuses(events) if text.startswith("step ")]
    assert [text.split(":")[0] for text in steps] == [
        "step 1/3 research",
        "step 1/3 research",
        "step 2/3 write",
        "step 2/3 write",
        "step 3/3 review",
        "step 3/3 review",
    ]
    artifacts = {
        e.artifact_update.artifact.name: e.artifact_update.artifact for e in events if e.HasField("artifact_update")
    }
    report = artifacts["report"].parts[0].text
    assert report.startswith("# ") and "## Sources" in report and "[1]" in report
    review = next(MessageToDict(p)["data"] for p in artifacts["review"].parts if p.HasField("data"))
    assert review["verdict"] in ("accept", "revise") and 0 <= review["score"] <= 100

    parent = await make_client().get_task(pb.GetTaskRequest(id=final.task_id))
    children = await children_of(mesh, http, parent, 3)

    async def recorded_ends() -> list[dict] | None:  # the parent ended first; the store records each child's end
        again = await children_of(mesh, http, parent, 3)
        return again if all(child["status"]["state"] != "TASK_STATE_WORKING" for child in again) else None

    children = await eventually(recorded_ends, what="the children's ends recorded")
    assert {child["status"]["state"] for child in children} == {"TASK_STATE_COMPLETED"}
    assert {child["history"][0]["metadata"]["step"] for child in children} == {"research", "write", "review"}


async def test_pipeline_asks_for_the_audience_and_continues_with_the_answer(make_client) -> None:
    client = make_client(streaming=True)
    first = await collect(client, send_request(user_message("what does QoS 1 guarantee"), skill="workflow.pipeline"))
    paused = first[-1].status_update
    assert paused.status.state == INPUT_REQUIRED
    assert "audience" in paused.status.message.parts[0].text.lower()

    answer = user_message("executives", task_id=paused.task_id, context_id=paused.context_id)
    second = await collect(client, send_request(answer))
    assert second[-1].status_update.status.state == COMPLETED, statuses(second)
    assert "executives" in second[-1].status_update.status.message.parts[0].text


async def test_reviewer_input_required_reaches_an_sdk_client_which_answers_on_the_same_task(make_client) -> None:
    client = make_client()
    report = "# MQTT\n\n## Summary\n\nRetained messages keep the last value [1].\n\n## Sources\n\n1. Retained (`r`)\n"
    [asked] = await collect(client, send_request(user_message(report), skill="review-report"))
    assert asked.task.status.state == INPUT_REQUIRED

    follow_up = user_message("general", task_id=asked.task.id, context_id=asked.task.context_id)
    [done] = await collect(client, send_request(follow_up))
    assert done.task.id == asked.task.id and done.task.status.state == COMPLETED
    assert [m.role for m in done.task.history].count(pb.ROLE_USER) == 2


async def test_fanout_researches_sub_questions_in_parallel_and_merges_them(
    mesh: Stack, make_client, http: httpx.AsyncClient
) -> None:
    text = "what is a retained message?\nwhat is a last will?\nwhat does QoS 1 guarantee?"
    [event] = await collect(make_client(), send_request(user_message(text), skill="workflow.fanout"))
    parent = event.task
    assert parent.status.state == COMPLETED
    merged = [
        MessageToDict(part)["data"] for artifact in parent.artifacts for part in artifact.parts if part.HasField("data")
    ]
    passages = [item for item in merged if "passage" in item]
    assert 3 <= len(passages) <= 10
    assert [p["rank"] for p in passages] == list(range(1, len(passages) + 1))
    assert len({p["source"] for p in passages}) >= 2  # several sub-questions, several sources
    summary = next(item for item in merged if "childTaskIds" in item)
    children = await children_of(mesh, http, parent, 3)
    assert {child["id"] for child in children} == set(summary["childTaskIds"])


async def test_canceling_a_parent_cancels_its_running_children(
    mesh: Stack, make_client, http: httpx.AsyncClient
) -> None:
    client = make_client()
    request = send_request(
        user_message("a\nb\nc"),
        skill="workflow.fanout",
        return_immediately=True,
        stepSkill="echo",
        stepMetadata={"delayMs": 30_000},
    )
    [event] = await collect(client, request)
    parent = event.task
    await children_of(mesh, http, parent, 3)  # all three are running

    canceled = await client.cancel_task(pb.CancelTaskRequest(id=parent.id))
    assert canceled.status.state == pb.TASK_STATE_CANCELED

    async def all_canceled() -> bool:
        children = await children_of(mesh, http, parent, 3)
        return all(child["status"]["state"] == "TASK_STATE_CANCELED" for child in children)

    await eventually(all_canceled, what="every child CANCELED")


async def test_canceling_a_parent_waiting_for_input_cancels_the_child_it_waits_on(
    mesh: Stack, make_client, http: httpx.AsyncClient
) -> None:
    client = make_client()
    [event] = await collect(client, send_request(user_message("what is a last will"), skill="workflow.pipeline"))
    parent = event.task
    assert parent.status.state == INPUT_REQUIRED
    await client.cancel_task(pb.CancelTaskRequest(id=parent.id))

    async def reviewer_canceled() -> bool:
        children = await children_of(mesh, http, parent, 3)
        review = next(c for c in children if c["history"][0]["metadata"]["step"] == "review")
        return review["status"]["state"] == "TASK_STATE_CANCELED"

    await eventually(reviewer_canceled, what="the waiting reviewer child CANCELED")


async def test_a_failing_step_fails_the_parent_with_the_reason(make_client) -> None:
    request = send_request(
        user_message(f"x {uuid.uuid4()}\ny"), skill="workflow.fanout", stepSkill="echo", stepMetadata={"delayMs": -1}
    )
    [event] = await collect(make_client(), request)
    assert event.task.status.state == pb.TASK_STATE_FAILED
    reason = event.task.status.message.parts[0].text
    assert "REJECTED" in reason and "delayMs" in reason
