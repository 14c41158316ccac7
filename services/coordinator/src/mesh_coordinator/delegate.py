"""Child tasks of a workflow: each step is delegated to a live agent by skill, linked to its parent
(same contextId, `referenceTaskIds`, metadata.parentTaskId), retried on another instance with the same task id
when an agent is unavailable or dies, and canceled when the parent is."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from a2amesh.agent import TaskContext, TaskFailedError
from a2amesh.binding import MeshRequester, RemoteError, RequestTimeoutError, RetryProfile
from a2amesh.binding.wire import SKILL_METADATA_KEY
from a2amesh.models import Message, Part, Role, StreamResponse, Task, TaskState, TaskStatus
from a2amesh.models.fold import fold
from a2amesh.topics import AgentAddress
from mesh_coordinator.credentials import CallerCredentials
from mesh_coordinator.directory import AgentChoice, DependencyError
from mesh_coordinator.router import MeshRouter

log = logging.getLogger(__name__)

CHILD_ATTEMPTS = 3
"""Instances a step is tried on before the parent fails."""

CANCEL_PROFILE = RetryProfile(first_reply_timeout=5.0, attempts=1)


@dataclass
class Child:
    """One step's task as the parent sees it."""

    step: str
    skill: str
    task: Task
    agent: AgentAddress | None = None
    tried: list[str] = field(default_factory=list)
    route: AgentChoice | None = None

    @property
    def id(self) -> str:
        return self.task.id

    @property
    def state(self) -> TaskState:
        return self.task.status.state

    def data_parts(self) -> list[Any]:
        """The JSON values of every data part of every artifact, in order."""
        return [part.data for artifact in self.task.artifacts or [] for part in artifact.parts if part.kind == "data"]

    def text(self, artifact_name: str | None = None) -> str:
        """The text of the artifact named `artifact_name` (or of all artifacts)."""
        return "\n".join(
            part.text
            for artifact in self.task.artifacts or []
            if artifact_name is None or artifact.name == artifact_name
            for part in artifact.parts
            if part.text is not None
        )

    def status_text(self) -> str:
        message = self.task.status.message
        return message.text() if message else ""


class Delegate:
    """Runs the child tasks of a parent task on the mesh."""

    def __init__(
        self,
        requester: MeshRequester,
        router: MeshRouter,
        profile: RetryProfile | None = None,
        credentials: CallerCredentials | None = None,
        on_update: Callable[[Task], None] | None = None,
    ) -> None:
        self.requester = requester
        self.router = router
        self.profile = profile or RetryProfile()
        self.credentials = credentials or CallerCredentials()
        self.on_update = on_update
        """Told each child's latest state (the coordinator answers GetTask on a child id from it at once)."""

    async def start(
        self, parent: TaskContext, step: str, skill: str, parts: list[Part], metadata: dict[str, Any] | None = None
    ) -> Child:
        """Run a new child for `step` to its end (terminal or interrupted); returns it whatever the outcome."""
        child_id = str(uuid.uuid4())
        self.credentials.adopt(parent.id, child_id)  # the child belongs to the parent's owner
        message = Message(
            message_id=uuid.uuid4().hex,
            role=Role.USER,
            parts=parts,
            task_id=child_id,
            context_id=parent.context_id,
            reference_task_ids=[parent.id],
            metadata={"parentTaskId": parent.id, "step": step},
        )
        child = Child(
            step,
            skill,
            Task(
                id=child_id,
                context_id=parent.context_id,
                history=[message],
                status=TaskStatus(state=TaskState.SUBMITTED),
            ),
        )
        params = {"message": message.to_wire(), "metadata": {SKILL_METADATA_KEY: skill, **(metadata or {})}}
        return await self._run(parent, child, params, fresh=True)

    async def answer(self, parent: TaskContext, child: Child, parts: list[Part]) -> Child:
        """Continue an interrupted child (same task id and context) on the agent that holds it."""
        message = Message(
            message_id=uuid.uuid4().hex,
            role=Role.USER,
            parts=parts,
            task_id=child.id,
            context_id=child.task.context_id,
            reference_task_ids=[parent.id],
        )
        params = {"message": message.to_wire(), "metadata": {SKILL_METADATA_KEY: child.skill}}
        return await self._run(parent, child, params, fresh=False)

    async def _run(self, parent: TaskContext, child: Child, params: dict[str, Any], *, fresh: bool) -> Child:
        children: dict[str, Child] = parent.state.setdefault("children", {})
        children[child.id] = child
        last_error = "no attempt made"
        for _attempt in range(CHILD_ATTEMPTS):
            topic = await self._target(child, fresh)
            if topic is None:
                break
            try:
                await self._follow(child, topic, params, self._authorization(parent, child, topic))
                return child
            except RequestTimeoutError as error:
                last_error = f"{child.agent} did not finish: {error}"
            except RemoteError as error:
                if error.binding_error is None or not error.binding_error.retryable:
                    raise TaskFailedError(f"step {child.step} ({child.skill}) refused: {error.error.message}") from None
                last_error = f"{child.agent} unavailable: {error.error.message}"
            if not fresh:
                break  # only the agent holding an interrupted task can continue it
            log.warning("step %s of %s: %s; trying another instance", child.step, parent.id, last_error)
        raise TaskFailedError(f"step {child.step} ({child.skill}) failed: {last_error}")

    async def _target(self, child: Child, fresh: bool) -> str | None:
        """Where the next attempt goes: a live agent with the skill not tried yet (least loaded first)."""
        if not fresh:
            assert child.agent is not None
            return child.agent.request_topic
        try:
            choices = await self.router.candidates(child.skill)  # the HTTP face's own choice of instance
        except DependencyError as error:
            raise TaskFailedError(f"step {child.step}: {error}") from None
        for choice in choices:
            if str(choice.address) not in child.tried:
                child.tried.append(str(choice.address))
                child.agent, child.route = choice.address, choice
                return choice.request_topic
        if not child.tried:
            raise TaskFailedError(f"step {child.step}: no agent offering skill '{child.skill}' is online")
        return None

    def _authorization(self, parent: TaskContext, child: Child, topic: str) -> str | None:
        """A token for the workflow's caller and the step agent's `topic`, when its card asks for one (else none)."""
        if child.route is None or not child.route.wants_auth:
            return None
        return self.credentials.token_for(parent.id, topic)

    async def _follow(self, child: Child, topic: str, params: dict[str, Any], authorization: str | None) -> None:
        stream = self.requester.request(
            topic, "SendStreamingMessage", params, profile=self.profile, authorization=authorization
        )
        task = child.task
        async for result in stream.results():
            task = fold(task, StreamResponse.from_wire(result))
            if stream.responder and child.agent and stream.responder != child.agent.agent:
                child.agent = AgentAddress(child.agent.org, child.agent.unit, stream.responder)
            if self.on_update is not None:
                self.on_update(task)
        child.task = task

    async def cancel_all(self, parent: TaskContext) -> None:
        """Cancel every child of `parent` that has not ended (best effort, bounded in time)."""
        children: dict[str, Child] = parent.state.get("children", {})
        running = [c for c in children.values() if c.agent is not None and not c.state.is_terminal]

        async def cancel(child: Child) -> None:
            assert child.agent is not None
            stream = self.requester.request(
                child.agent.request_topic,
                "CancelTask",
                {"id": child.id},
                profile=CANCEL_PROFILE,
                authorization=self._authorization(parent, child, child.agent.request_topic),
            )
            with contextlib.suppress(RemoteError, RequestTimeoutError, StopAsyncIteration):
                async with contextlib.aclosing(stream.results()) as results:
                    child.task = Task.from_wire(await anext(results))

        await asyncio.gather(*(cancel(child) for child in running))
