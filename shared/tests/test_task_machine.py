"""The A2A task state machine alone (binding.machine), with no broker and no MQTT: each request answered once,
each task's events in order to the record and to its listeners, retries de-duplicated, multi-turn tasks resumed,
cancels, the stop that hands a task to a pool peer or ends it FAILED, and a lost broker reported on the task."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from a2amesh.agent import MeshAgent, TaskContext, TaskRejectedError, skill
from a2amesh.binding.machine import KEEPALIVES_AT_ONCE, IncomingRequest, ReplyAddress, TaskMachine
from a2amesh.binding.tasks import FinishedTask, Subscriber, TaskRecord
from a2amesh.binding.wire import encode
from a2amesh.models import BindingError, ErrorCode, JsonRpcResponse, StreamResponse
from a2amesh.mqtt import NotConnectedError
from a2amesh.settings import AgentSettings

WAIT = 10.0
"""Seconds any one step may take (all of it runs in memory: far more than enough, and bounded)."""


class RecordingOutbox:
    """Keeps everything the machine sends, by Correlation Data; `broken` makes every publish fail as a lost broker
    does."""

    def __init__(self) -> None:
        self.connected = True
        self.broken = False
        self.events: list[dict[str, Any]] = []
        self.replies: dict[bytes, list[dict[str, Any]]] = {}
        self.keepalives = 0

    def _check(self) -> None:
        if self.broken:
            raise NotConnectedError("no broker (test)")

    async def reply(self, to: ReplyAddress, response: JsonRpcResponse) -> None:
        self._check()
        self.replies.setdefault(to.correlation, []).append(json.loads(encode(response)))

    async def stream(self, subscriber: Subscriber, item: StreamResponse, body: bytes) -> None:
        self._check()
        wrapped = {"jsonrpc": "2.0", "id": subscriber.request_id, "result": json.loads(body)}
        self.replies.setdefault(subscriber.correlation, []).append(wrapped)

    async def keepalive(self, subscriber: Subscriber, body: bytes) -> None:
        self._check()
        self.keepalives += 1

    async def record(self, body: bytes) -> None:
        self._check()
        self.events.append(json.loads(body))


class Clerk(MeshAgent):
    """A skill for each way a task goes: done at once, asks first, waits to be let go, or is refused."""

    name = "Clerk"
    description = "Files things."
    rerunnable = True

    def __init__(self, settings: AgentSettings) -> None:
        super().__init__(settings)
        self.calls = 0
        self.release = asyncio.Event()
        self.canceled: list[str] = []

    @skill(id="file", name="File", description="Files the text.")
    async def file(self, task: TaskContext) -> None:
        self.calls += 1
        if not task.text:
            raise TaskRejectedError("nothing to file")
        await task.artifact(text=f"filed {task.text}")

    @skill(id="ask", name="Ask", description="Asks where, then files.")
    async def ask(self, task: TaskContext) -> None:
        if task.turn == 1:
            task.state["first"] = task.text
            await task.require_input("where?")
            return
        await task.complete(f"filed {task.state['first']} under {task.text}")

    @skill(id="wait", name="Wait", description="Works until released.")
    async def wait(self, task: TaskContext) -> None:
        await task.working("waiting")
        await self.release.wait()

    async def on_cancel(self, task: TaskContext) -> None:
        self.canceled.append(task.id)


def machine_of(*, pool: str | None = None, **settings: Any) -> tuple[TaskMachine, Clerk, RecordingOutbox]:
    agent = Clerk(AgentSettings(agent_id="clerk", pool=pool, **settings))
    outbox = RecordingOutbox()
    return agent.task_machine(outbox), agent, outbox


async def call(machine: TaskMachine, method: str, params: dict[str, Any], *, authorization: str | None = None) -> bytes:
    """Hand the machine one request; returns its Correlation Data (the key of its replies)."""
    correlation = uuid.uuid4().bytes
    payload = json.dumps({"jsonrpc": "2.0", "id": 7, "method": method, "params": params}).encode()
    to = ReplyAddress("$a2a/v1/reply/acme/default/tester/x", correlation)
    await asyncio.wait_for(machine.handle(IncomingRequest(payload, to, authorization)), WAIT)
    return correlation


def send_params(text: str, skill: str = "file", task_id: str | None = None) -> dict[str, Any]:
    message = {"messageId": uuid.uuid4().hex, "role": "ROLE_USER", "parts": [{"text": text}]}
    message["taskId"] = task_id or str(uuid.uuid4())
    return {"message": message, "metadata": {"skill": skill}}


async def settle(machine: TaskMachine) -> None:
    """Wait for every task runner to finish its turn."""
    runners = [record.runner for record in machine.tasks.values() if record.runner is not None]
    if runners:
        await asyncio.wait_for(asyncio.gather(*runners, return_exceptions=True), WAIT)


async def until(condition: Callable[[], bool]) -> None:
    """Wait, a bounded number of short sleeps, for `condition` to hold (what a running task does next)."""
    for _ in range(int(WAIT / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"still not so after {WAIT}s")


def states(items: list[dict[str, Any]]) -> list[str]:
    """The state each stream item or event carries, in order."""
    found = []
    for item in items:
        item = item.get("result", item)
        if "task" in item:
            found.append(item["task"]["status"]["state"])
        elif "statusUpdate" in item:
            found.append(item["statusUpdate"]["status"]["state"])
    return found


async def test_a_one_shot_request_is_answered_once_with_the_completed_task_and_every_event_recorded() -> None:
    machine, agent, outbox = machine_of()
    params = send_params("invoice")
    correlation = await call(machine, "SendMessage", params)
    await settle(machine)
    [reply] = outbox.replies[correlation]
    assert reply["result"]["task"]["status"]["state"] == "TASK_STATE_COMPLETED"
    assert reply["result"]["task"]["artifacts"][0]["parts"][0]["text"] == "filed invoice"
    assert states(outbox.events) == ["TASK_STATE_SUBMITTED", "TASK_STATE_WORKING", "TASK_STATE_COMPLETED"]
    assert sum("artifactUpdate" in event for event in outbox.events) == 1
    assert isinstance(machine.tasks[params["message"]["taskId"]], FinishedTask)  # kept compactly once done
    assert machine.in_flight == 0 and agent.calls == 1


async def test_a_retry_under_the_same_task_id_gets_the_task_without_running_it_again() -> None:
    machine, agent, outbox = machine_of()
    params = send_params("receipt")
    await call(machine, "SendMessage", params)
    await settle(machine)
    again = await call(machine, "SendStreamingMessage", params)
    [snapshot] = outbox.replies[again]
    assert snapshot["result"]["task"]["status"]["state"] == "TASK_STATE_COMPLETED"
    assert agent.calls == 1
    other_context = {**params, "message": {**params["message"], "contextId": "someone-elses"}}
    refused = await call(machine, "SendMessage", other_context)
    assert outbox.replies[refused][0]["error"]["code"] == ErrorCode.INVALID_PARAMS


async def test_a_rejection_ends_the_task_rejected_with_the_reason() -> None:
    machine, _, outbox = machine_of()
    correlation = await call(machine, "SendStreamingMessage", send_params(""))
    await settle(machine)
    stream = outbox.replies[correlation]
    assert states(stream)[-1] == "TASK_STATE_REJECTED"
    assert stream[-1]["result"]["statusUpdate"]["status"]["message"]["parts"][0]["text"] == "nothing to file"


async def test_input_required_pauses_the_task_and_the_answer_resumes_the_same_one() -> None:
    machine, _, outbox = machine_of()
    params = send_params("the deed", skill="ask")
    task_id = params["message"]["taskId"]
    first = await call(machine, "SendStreamingMessage", params)
    await settle(machine)
    assert states(outbox.replies[first])[-1] == "TASK_STATE_INPUT_REQUIRED"
    paused = machine.tasks[task_id]
    assert isinstance(paused, TaskRecord) and paused.unfinished is paused and not paused.active
    second = await call(machine, "SendStreamingMessage", send_params("D", skill="ask", task_id=task_id))
    await settle(machine)
    final = outbox.replies[second][-1]["result"]["statusUpdate"]["status"]
    assert final["state"] == "TASK_STATE_COMPLETED"
    assert final["message"]["parts"][0]["text"] == "filed the deed under D"
    finished = machine.tasks[task_id]
    assert finished.unfinished is None and len(finished.task.history or []) >= 2


async def test_cancel_ends_a_paused_task_through_the_hook_and_refuses_a_finished_one() -> None:
    machine, agent, outbox = machine_of()
    paused = send_params("x", skill="ask")
    task_id = paused["message"]["taskId"]
    await call(machine, "SendMessage", paused)
    await settle(machine)
    canceled = await call(machine, "CancelTask", {"id": task_id})
    assert outbox.replies[canceled][0]["result"]["status"]["state"] == "TASK_STATE_CANCELED"
    assert agent.canceled == [task_id]
    again = await call(machine, "CancelTask", {"id": task_id})
    assert outbox.replies[again][0]["error"]["code"] == ErrorCode.TASK_NOT_CANCELABLE
    unknown = await call(machine, "CancelTask", {"id": str(uuid.uuid4())})
    assert outbox.replies[unknown][0]["error"]["code"] == ErrorCode.TASK_NOT_FOUND


async def test_cancel_of_a_running_task_cancels_its_handler() -> None:
    machine, _, outbox = machine_of()
    params = send_params("x", skill="wait")
    await call(machine, "SendMessage", params)
    task_id = params["message"]["taskId"]
    await until(lambda: "TASK_STATE_WORKING" in states(outbox.events))
    canceled = await call(machine, "CancelTask", {"id": task_id})
    assert outbox.replies[canceled][0]["result"]["status"]["state"] == "TASK_STATE_CANCELED"
    await settle(machine)
    assert machine.in_flight == 0


@pytest.mark.parametrize("pool", [None, "clerks"])
async def test_a_stop_hands_a_rerunnable_task_to_the_pool_or_ends_it_failed(pool: str | None) -> None:
    machine, _, outbox = machine_of(pool=pool)
    params = send_params("x", skill="wait")
    correlation = await call(machine, "SendMessage", params)
    await until(lambda: machine.in_flight > 0 and "TASK_STATE_WORKING" in states(outbox.events))
    machine.accepting = False
    refused = await call(machine, "SendMessage", send_params("late"))
    assert outbox.replies[refused][0]["error"]["code"] == BindingError.RESPONDER_UNAVAILABLE
    await asyncio.wait_for(machine.drain(), 30)  # the handler never returns: the drain ends it after its grace
    record = machine.tasks[params["message"]["taskId"]]
    [answer] = outbox.replies[correlation]
    if pool:  # handed back: the requester is told to resend to a peer, and no ending of ours is recorded
        assert answer["error"]["code"] == BindingError.RESPONDER_UNAVAILABLE
        assert states(outbox.events)[-1] == "TASK_STATE_WORKING"
    else:
        assert answer["result"]["task"]["status"]["state"] == "TASK_STATE_FAILED"
        assert states(outbox.events)[-1] == "TASK_STATE_FAILED"
    if isinstance(record, TaskRecord):  # handed over: kept whole, its runner cancelled
        assert record.state == {}  # the agent's scratch space holds nothing of the runtime's


async def test_a_lost_broker_leaves_the_task_failed_where_get_task_reads_it() -> None:
    machine, _, outbox = machine_of()
    params = send_params("x")
    outbox.broken = True  # the task's first publish (the Task as submitted) finds no broker
    await call(machine, "SendMessage", params)
    await settle(machine)
    outbox.broken = False
    read = await call(machine, "GetTask", {"id": params["message"]["taskId"]})
    status = outbox.replies[read][0]["result"]["status"]
    assert status["state"] == "TASK_STATE_FAILED"
    assert "lost the broker" in status["message"]["parts"][0]["text"]


async def test_bad_requests_get_one_clear_error_each() -> None:
    machine, _, outbox = machine_of(auth_tokens=["s3cret"])
    cases = {
        b"{not json": ErrorCode.PARSE_ERROR,
        b'{"jsonrpc":"2.0","id":1}': ErrorCode.INVALID_REQUEST,
    }
    for payload, code in cases.items():
        to = ReplyAddress("r", uuid.uuid4().bytes)
        await machine.handle(IncomingRequest(payload, to, "Bearer s3cret"))
        assert [reply["error"]["code"] for reply in outbox.replies[to.correlation]] == [code]
    unauthorized = await call(machine, "GetTask", {"id": "x"})
    wrong = await call(machine, "GetTask", {"id": "x"}, authorization="Bearer nope")
    unknown = await call(machine, "NoSuchMethod", {}, authorization="Bearer s3cret")
    listing = await call(machine, "ListTasks", {}, authorization="Bearer s3cret")
    bad_id = await call(machine, "SendMessage", send_params("x", task_id="not-a-uuid"), authorization="Bearer s3cret")
    assert outbox.replies[unauthorized][0]["error"]["message"] == "authorization required"
    assert outbox.replies[wrong][0]["error"]["message"] == "authorization refused"
    assert outbox.replies[unknown][0]["error"]["code"] == ErrorCode.METHOD_NOT_FOUND
    assert outbox.replies[listing][0]["error"]["code"] == ErrorCode.UNSUPPORTED_OPERATION
    assert outbox.replies[bad_id][0]["error"]["code"] == ErrorCode.INVALID_PARAMS
    assert machine.tasks == {} and outbox.events == []


class SlowAckOutbox(RecordingOutbox):
    """Each keepalive waits for its acknowledgement until let go, as a publish at QoS 1 waits for the broker's; counts
    how many wait at once."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting = 0
        self.most_waiting = 0
        self.acks = asyncio.Event()

    async def keepalive(self, subscriber: Subscriber, body: bytes) -> None:
        self.waiting += 1
        self.most_waiting = max(self.most_waiting, self.waiting)
        try:
            await self.acks.wait()
        finally:
            self.waiting -= 1
        await super().keepalive(subscriber, body)


async def test_many_running_tasks_get_their_keepalives_at_once_not_one_after_another() -> None:
    """One keepalive at a time, each waiting for the broker, took a round longer than the requesters' idle timeout
    once thousands of tasks ran (docs/benchmarks.md, open streams): they go out KEEPALIVES_AT_ONCE at a time."""
    tasks = KEEPALIVES_AT_ONCE + 10
    agent = Clerk(AgentSettings(agent_id="clerk", keepalive_interval=0.05, max_concurrent=tasks))
    outbox = SlowAckOutbox()
    machine = agent.task_machine(outbox)
    for index in range(tasks):
        await call(machine, "SendStreamingMessage", send_params(f"x{index}", skill="wait"))
    stop = asyncio.Event()
    keeper = asyncio.create_task(machine.keep_alive(stop))
    await until(lambda: outbox.waiting == KEEPALIVES_AT_ONCE)
    assert outbox.most_waiting == KEEPALIVES_AT_ONCE, "a round sends a batch at once, and no more than a batch"
    outbox.acks.set()
    await until(lambda: outbox.keepalives >= tasks)
    stop.set()
    agent.release.set()
    await settle(machine)
    await asyncio.wait_for(keeper, WAIT)


async def test_a_running_task_is_kept_alive_for_its_streaming_listeners() -> None:
    machine, agent, outbox = machine_of(keepalive_interval=0.05)
    stop = asyncio.Event()
    keeper = asyncio.create_task(machine.keep_alive(stop))
    await call(machine, "SendStreamingMessage", send_params("x", skill="wait"))
    await until(lambda: outbox.keepalives >= 2)
    agent.release.set()
    await settle(machine)
    stop.set()
    await asyncio.wait_for(keeper, WAIT)
