"""Test an agent fast and without a broker: `AgentHarness` sends requests to the agent's real task machine (the one
its responder runs, so WORKING, COMPLETED on return, REJECTED on TaskRejectedError and INPUT_REQUIRED come from the
runtime itself) with an in-memory outbox instead of MQTT, and hands back what a streaming requester would receive.

    harness = AgentHarness(MyAgent(AgentSettings(agent_id="my-agent-test")))
    reply = await harness.send("hello", skill="my-skill")
    assert reply.state is TaskState.COMPLETED and reply.artifacts[0].parts[0].text == "..."

A real-broker test of the agent's process (devstack.agent_testing) belongs next to these: it shows the same
agent starts, publishes its card and answers over MQTT."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from a2amesh.agent import MeshAgent
from a2amesh.binding.machine import IncomingRequest, ReplyAddress, TaskMachine
from a2amesh.binding.tasks import Subscriber
from a2amesh.binding.wire import encode
from a2amesh.models import Artifact, JsonRpcResponse, Part, StreamResponse, Task, TaskState
from a2amesh.topics import AgentAddress, new_reply_suffix

AgentT = TypeVar("AgentT", bound=MeshAgent)

REPLY_TIMEOUT = 30.0
"""Seconds a turn may take before the harness gives up on it (a handler that never ends its turn)."""


class AgentRequestError(Exception):
    """The agent answered the request with a JSON-RPC error instead of a task (e.g. -32602, empty parts)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class MemoryOutbox:
    """The outbox of an agent's task machine kept in memory: what it would publish is recorded (the task events
    in `events`), and the replies to each request wait in that request's inbox."""

    connected = True

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self._inboxes: dict[bytes, asyncio.Queue[dict[str, Any]]] = {}

    async def reply(self, to: ReplyAddress, response: JsonRpcResponse) -> None:
        await self._deliver(to.correlation, json.loads(encode(response)))

    async def stream(self, subscriber: Subscriber, item: StreamResponse, body: bytes) -> None:
        reply = {"jsonrpc": "2.0", "id": subscriber.request_id, "result": json.loads(body)}
        await self._deliver(subscriber.correlation, reply)

    async def keepalive(self, subscriber: Subscriber, body: bytes) -> None:
        return  # activity only: nothing a test of the agent's work looks at

    async def record(self, body: bytes) -> None:
        self.events.append(json.loads(body))

    async def _deliver(self, correlation: bytes, reply: dict[str, Any]) -> None:
        inbox = self._inboxes.get(correlation)
        if inbox is not None:
            await inbox.put(reply)

    def inbox(self, correlation: bytes) -> asyncio.Queue[dict[str, Any]]:
        """Where the replies to the request sent with `correlation` arrive."""
        return self._inboxes.setdefault(correlation, asyncio.Queue())

    def forget(self, correlation: bytes) -> None:
        """Stop collecting replies to that request (it is answered)."""
        self._inboxes.pop(correlation, None)


@dataclass
class Reply:
    """One turn of a task as a streaming requester saw it, and the task as the agent holds it afterwards."""

    events: list[dict[str, Any]]
    """Every StreamResponse of the turn in wire form ({"task": ...}, {"statusUpdate": ...}, {"artifactUpdate": ...})."""
    task: Task = field(repr=False)

    @property
    def task_id(self) -> str:
        return self.task.id

    @property
    def context_id(self) -> str:
        return self.task.context_id or ""

    @property
    def state(self) -> TaskState:
        return self.task.status.state

    @property
    def text(self) -> str:
        """The final status message's text: the reason of a rejection or failure, the question of INPUT_REQUIRED,
        the closing note of a completion ("" when there is none)."""
        message = self.task.status.message
        return message.text() if message is not None else ""

    @property
    def notes(self) -> list[str]:
        """The texts of this turn's status updates, in order (progress notes, then the final one)."""
        texts = []
        for event in self.events:
            message = event.get("statusUpdate", {}).get("status", {}).get("message")
            if message:
                texts.append("".join(part.get("text", "") for part in message.get("parts", [])))
        return texts

    @property
    def artifact_updates(self) -> list[dict[str, Any]]:
        """This turn's artifact updates in wire form (artifact, append, lastChunk), in order."""
        return [event["artifactUpdate"] for event in self.events if "artifactUpdate" in event]

    def sole_artifact(self, name: str) -> dict[str, Any]:
        """The artifact of a turn that COMPLETED with one whole artifact (one update, lastChunk true) named `name`,
        in wire form; AssertionError saying what came instead."""
        if self.state is not TaskState.COMPLETED:
            raise AssertionError(f"the task ended {self.state.name}: {self.text}")
        updates = self.artifact_updates
        if len(updates) != 1 or updates[0]["artifact"].get("name") != name or updates[0].get("lastChunk") is not True:
            raise AssertionError(f"expected one whole artifact {name!r}, got {updates}")
        return updates[0]["artifact"]

    @property
    def artifacts(self) -> list[Artifact]:
        """The task's artifacts, chunks merged, as the task store keeps them."""
        return list(self.task.artifacts or [])


class AgentHarness(Generic[AgentT]):
    """An agent's real task machine (what its responder runs) over a `MemoryOutbox`: no broker, no process, one
    event loop."""

    def __init__(self, agent: AgentT, *, authorization: str | None = None) -> None:
        """`authorization` is sent with every request (User Property a2a-authorization over MQTT), for an agent
        that requires a Bearer token (MESH_AUTH_TOKENS)."""
        self.agent = agent
        self.authorization = authorization
        self.outbox = MemoryOutbox()
        self.machine: TaskMachine = agent.task_machine(self.outbox)
        self.requester = AgentAddress(agent.settings.org, agent.settings.unit, f"harness-{uuid.uuid4().hex[:8]}")

    @property
    def events(self) -> list[dict[str, Any]]:
        """Every task event the agent published on its event topic (what the task store records)."""
        return list(self.outbox.events)

    async def send(
        self,
        *parts: Part | str,
        task_id: str | None = None,
        context_id: str | None = None,
        message_metadata: dict[str, Any] | None = None,
        **metadata: Any,
    ) -> Reply:
        """Send one message as SendStreamingMessage and wait for the turn to end (a final state or INPUT_REQUIRED).
        Strings are text parts; keyword arguments are the request's metadata (`skill=`...). Pass the task id of an
        earlier reply to answer the agent's question on the same task."""
        message: dict[str, Any] = {
            "messageId": uuid.uuid4().hex,
            "role": "ROLE_USER",
            "taskId": task_id or str(uuid.uuid4()),
            "parts": [Part(text=part).to_wire() if isinstance(part, str) else part.to_wire() for part in parts],
        }
        if context_id:
            message["contextId"] = context_id
        if message_metadata:
            message["metadata"] = message_metadata
        params: dict[str, Any] = {"message": message}
        if metadata:
            params["metadata"] = metadata
        events = await self._request("SendStreamingMessage", params)
        record = self.machine.tasks[message["taskId"]]
        return Reply(events=events, task=record.task)

    async def _request(self, method: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        correlation = uuid.uuid4().bytes
        inbox = self.outbox.inbox(correlation)
        request = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
        reply_to = ReplyAddress(self.requester.reply_topic(new_reply_suffix()), correlation)
        await self.machine.handle(IncomingRequest(json.dumps(request).encode(), reply_to, self.authorization))
        record = self.machine.tasks.get(params.get("message", {}).get("taskId", ""))
        runner = record.runner if record is not None else None
        if runner is not None:  # the turn runs in a task of its own: let it finish, so a next turn continues it
            await asyncio.wait_for(asyncio.shield(runner), REPLY_TIMEOUT)
        events: list[dict[str, Any]] = []
        try:
            async with asyncio.timeout(REPLY_TIMEOUT):
                while True:
                    reply = await inbox.get()
                    if "error" in reply:
                        raise AgentRequestError(reply["error"]["code"], reply["error"]["message"])
                    events.append(reply["result"])
                    if StreamResponse.from_wire(reply["result"]).ends_stream:
                        return events
        finally:
            self.outbox.forget(correlation)
