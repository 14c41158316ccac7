"""Tasks the coordinator is relaying right now: one pump per task reads the agent's stream, keeps the task's
current state, and fans each event out to every HTTP client listening — independently of any one client, so a
client that disconnects, returns immediately or subscribes later changes nothing for the task."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

from a2amesh.binding import RemoteError, ReplyStream, RequestTimeoutError
from a2amesh.binding.tasks import agent_message
from a2amesh.models import (
    ErrorCode,
    StreamResponse,
    Task,
    TaskState,
    TaskStatus,
    TaskStatusUpdateEvent,
    utc_now,
)
from a2amesh.models.fold import fold
from a2amesh.mqtt import NotConnectedError
from a2amesh.topics import AgentAddress

if TYPE_CHECKING:
    from mesh_coordinator.recover import Resume

log = logging.getLogger(__name__)

Publish = Callable[["LiveTask", StreamResponse], Awaitable[None]]
_END = object()

RECOVERIES = 4
"""Times one task's relay is picked up again (mesh_coordinator.recover) before the coordinator gives up on it."""

RECENT_TASKS_KEPT = 2_000
"""Finished tasks kept in memory so GetTask right after a task ends does not depend on the store's lag."""


class LiveTask:
    """One task being relayed from an agent."""

    def __init__(
        self, task: Task, agent: AgentAddress, record_event: Publish, *, mirror: bool, wants_auth: bool = False
    ) -> None:
        self._task = task
        """The task as it stands: replaced with each event folded in, never changed in place."""
        self.agent = agent
        self.mirror = mirror
        self.wants_auth = wants_auth
        """Whether the coordinator records this task's events (the agent does not publish them itself)."""
        self._record_event = record_event
        self._queues: set[asyncio.Queue[object]] = set()
        self.first_item: asyncio.Future[StreamResponse] = asyncio.get_running_loop().create_future()
        self.ended = asyncio.Event()
        self.pump: asyncio.Task[None] | None = None
        self.started = time.monotonic()
        self.answered_by: str | None = None
        """The agent that answered (a pool member, or the agent addressed), once any reply arrived."""
        self.resume: Resume | None = None
        """How to pick the task up again when the relay loses it (None: end it FAILED at once)."""
        self.recoveries = 0
        self.on_event: Callable[[], None] | None = None
        """Called with each event relayed (the push delivery worker's wake-up, for a task with push configs)."""

    @property
    def task(self) -> Task:
        """The task as it stands, from the events relayed so far."""
        return self._task

    @property
    def id(self) -> str:
        return self._task.id

    @property
    def _context_id(self) -> str:
        return self._task.context_id or ""

    def listen(self) -> asyncio.Queue[object]:
        """A queue receiving every further event (then an end marker, or an exception)."""
        queue: asyncio.Queue[object] = asyncio.Queue()
        self._queues.add(queue)
        return queue

    def stop_listening(self, queue: asyncio.Queue[object]) -> None:
        self._queues.discard(queue)

    def release(self, queue: asyncio.Queue[object]) -> None:
        """Its listener went away: stop feeding `queue`, and end the iteration of `events(queue)`."""
        if queue in self._queues:
            self._queues.discard(queue)
            queue.put_nowait(_END)

    async def events(self, queue: asyncio.Queue[object]) -> AsyncIterator[StreamResponse]:
        """Drain a queue from `listen()` until the stream ends; re-raises a failure that ended it."""
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                assert isinstance(item, StreamResponse)
                yield item
        finally:
            self.stop_listening(queue)

    def ended_callback(self, callback: Callable[[LiveTask], None]) -> None:
        """Call `callback(self)` once the relay has ended."""
        assert self.pump is not None, "start the relay first"
        self.pump.add_done_callback(lambda _pump: callback(self))

    def start(self, stream: ReplyStream) -> None:
        """Begin relaying `stream` in the background."""
        self.pump = asyncio.create_task(self._pump(stream), name=f"relay-{self.id}")

    async def _pump(self, stream: ReplyStream) -> None:
        try:
            while True:
                try:
                    await self._follow(stream)
                    return
                except (RequestTimeoutError, NotConnectedError, RemoteError) as error:
                    if not self._recoverable(error):
                        raise
                    log.warning("task %s: relay lost (%s); picking it up again", self.id, error)
                    self.recoveries += 1
                    assert self.resume is not None
                    again = await self.resume.reattach(self, error)
                    if again is None:
                        raise
                    if isinstance(again, Task):
                        await self._relay(StreamResponse(task=again))
                        return
                    stream = again
        except RemoteError as error:
            if self.first_item.done():
                await self._give_up(f"agent {self.agent} answered with an error: {error}", recorded_by_agent=True)
            else:
                self._fail_before_start(error)
        except RequestTimeoutError as error:
            if not self.first_item.done():
                await self._give_up(f"agent {self.agent} did not answer: {error}", recorded_by_agent=False)
            else:
                await self._give_up(f"agent {self.agent} stopped responding: {error}", recorded_by_agent=True)
                await self._cancel_at_agent()
        except Exception as error:  # the relay must never die silently with the task open
            log.exception("task %s: relay failed", self.id)
            await self._give_up(f"coordinator relay failed: {type(error).__name__}", recorded_by_agent=True)
            await self._cancel_at_agent()
        finally:
            self.ended.set()
            for queue in list(self._queues):
                queue.put_nowait(_END)

    def _recoverable(self, error: Exception) -> bool:
        """Whether to pick the task up again: a lost connection or a silent agent, or a re-attach that found the
        task just ended (SubscribeToTask on a finished task), within the bounded number of recoveries."""
        if self.resume is None or self.task.status.state.ends_stream:
            return False
        if self.recoveries >= RECOVERIES:
            return False
        if isinstance(error, RemoteError):
            if handed_back(error):  # mid-stream only: refused at the start is overload, answered at submit
                return self.first_item.done()
            return self.recoveries > 0 and error.code == ErrorCode.UNSUPPORTED_OPERATION
        return True

    async def _follow(self, stream: ReplyStream) -> None:
        async for item in stream.items():
            if stream.responder and stream.responder != self.agent.agent:
                # a pool member answered: follow-ups and cancels go to that member's own topic
                self.agent = AgentAddress(self.agent.org, self.agent.unit, stream.responder)
            self.answered_by = stream.responder or self.agent.agent
            if not self.first_item.done() and item.task is None:
                # A stream is a Task followed by updates; agents that start with an update get the Task first.
                await self._relay(StreamResponse(task=self.task))
            await self._relay(item)

    async def _cancel_at_agent(self) -> None:
        """The coordinator gave up on the task: cancel it where it may still run, so no agent works for a task
        nobody follows (best effort, one bounded attempt; the FAILED outcome is already recorded and stays)."""
        if self.resume is not None and self.answered_by:
            try:
                await self.resume.cancel(self)
            except Exception:
                log.info("task %s: could not cancel it at %s", self.id, self.agent)

    async def _relay(self, item: StreamResponse) -> None:
        self._broadcast(item)
        if self.mirror:
            await self._record_event(self, item)

    def _broadcast(self, item: StreamResponse) -> None:
        self._task = fold(self._task, item)
        if self.on_event is not None:
            self.on_event()
        if not self.first_item.done():
            self.first_item.set_result(item)
        for queue in list(self._queues):
            queue.put_nowait(item)

    def _fail_before_start(self, error: RemoteError) -> None:
        if not self.first_item.done():
            self.first_item.set_exception(error)
            self.first_item.exception()  # mark retrieved: listeners get it through their queues too
        for queue in list(self._queues):
            queue.put_nowait(error)

    async def _give_up(self, reason: str, *, recorded_by_agent: bool) -> None:
        """End the task FAILED with the reason, and record that outcome so nothing is left WORKING."""
        log.warning("task %s: %s", self.id, reason)
        status = TaskStatus(
            state=TaskState.FAILED, message=agent_message(reason, self.id, self._context_id), timestamp=utc_now()
        )
        if recorded_by_agent:
            item = StreamResponse(
                status_update=TaskStatusUpdateEvent(task_id=self.id, context_id=self._context_id, status=status)
            )
        else:
            item = StreamResponse(task=self.task.model_copy(update={"status": status}))
        self._broadcast(item)
        try:
            await self._record_event(self, item)
        except Exception:
            log.exception("task %s: could not record the failure", self.id)


class TaskHub:
    """Every task the coordinator relays, plus the recently finished ones."""

    def __init__(self) -> None:
        self._tasks: dict[str, LiveTask] = {}
        self._in_flight: Counter[AgentAddress] = Counter()
        self._noted: OrderedDict[str, Task] = OrderedDict()

    def get(self, task_id: str) -> LiveTask | None:
        return self._tasks.get(task_id)

    def note(self, task: Task) -> None:
        """Remember the latest state of a task this coordinator followed without relaying it (a workflow's child),
        so reading its id right after the workflow named it does not depend on the store's lag."""
        self._noted[task.id] = task
        self._noted.move_to_end(task.id)
        while len(self._noted) > RECENT_TASKS_KEPT:
            self._noted.popitem(last=False)

    def latest(self, task_id: str) -> Task | None:
        """The task as this coordinator last saw it (relayed or followed), or None."""
        live = self._tasks.get(task_id)
        return live.task if live is not None else self._noted.get(task_id)

    def fresher(self, stored: Task) -> Task:
        """The stored task, or what this coordinator saw of it if that is further along (terminal where the store
        still says otherwise): a task id the mesh handed out reads back its latest state at once."""
        seen = self.latest(stored.id)
        if seen is not None and seen.status.state.is_terminal and not stored.status.state.is_terminal:
            return seen
        return stored

    def start(self, live: LiveTask, stream: ReplyStream) -> None:
        """Start relaying `stream` and track the relay, in flight until it ends; past RECENT_TASKS_KEPT the oldest
        finished one goes. Called on every task: a running relay met while evicting moves to the back instead of
        a full scan."""
        live.start(stream)
        self._tasks[live.id] = live
        routed_to = live.agent  # counted against the agent it was sent to, whoever in a pool answers
        self._in_flight[routed_to] += 1
        live.ended_callback(lambda _live: self._settled(routed_to))
        for _ in range(len(self._tasks) - RECENT_TASKS_KEPT):
            oldest_id = next(iter(self._tasks))
            oldest = self._tasks.pop(oldest_id)
            if not oldest.ended.is_set():
                self._tasks[oldest_id] = oldest

    def _settled(self, agent: AgentAddress) -> None:
        self._in_flight[agent] -= 1
        if self._in_flight[agent] <= 0:
            del self._in_flight[agent]

    def in_flight_to(self, agent: AgentAddress) -> int:
        """Tasks this coordinator is relaying from `agent` right now."""
        return self._in_flight.get(agent, 0)

    def first_for_agent(self, agent: AgentAddress) -> LiveTask | None:
        """A task relayed from this agent, if any."""
        return next((live for live in self._tasks.values() if live.agent == agent), None)

    @property
    def in_flight(self) -> int:
        return sum(1 for live in self._tasks.values() if not live.ended.is_set())

    async def close(self, grace: float = 5.0) -> None:
        """Give running relays a moment to finish, then stop them."""
        pumps = [live.pump for live in self._tasks.values() if live.pump and not live.pump.done()]
        if pumps:
            await asyncio.wait(pumps, timeout=grace)
        for pump in pumps:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pump


def handed_back(error: Exception) -> bool:
    """Whether the agent gave a running task back (a stopping pool replica answers -32004 mid-stream): another
    member should run it, under the same task id."""
    if not isinstance(error, RemoteError) or error.binding_error is None:
        return False
    return error.binding_error.retryable


def new_context_id() -> str:
    return str(uuid.uuid4())
