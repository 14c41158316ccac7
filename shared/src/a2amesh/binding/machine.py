"""The A2A side of a responder, apart from how its messages travel: the JSON-RPC methods (dispatch), the table of
tasks, and each task's run from SUBMITTED to its end. It talks to the world through an `Outbox` (MQTT in
`binding.transport`, memory in `a2amesh.testing`), so it runs and is tested without a broker."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import ValidationError

from a2amesh import tracing
from a2amesh.binding.tasks import (
    FinishedTask,
    Stop,
    Subscriber,
    TaskContext,
    TaskFailedError,
    TaskRecord,
    TaskRejectedError,
    agent_message,
)
from a2amesh.binding.wire import (
    ROUTING_METADATA_KEY,
    SKILL_METADATA_KEY,
    is_valid_task_id,
    rerunnable_skills,
)
from a2amesh.models import (
    AgentCard,
    BindingError,
    CancelTaskRequest,
    ErrorCode,
    GetTaskRequest,
    JsonRpcRequest,
    JsonRpcResponse,
    Role,
    SendMessageRequest,
    StreamResponse,
    SubscribeToTaskRequest,
    Task,
    TaskState,
    TaskStatus,
    TaskStatusUpdateEvent,
    a2a_error_info,
    binding_error_response,
    error_response,
    result_response,
    utc_now,
)
from a2amesh.mqtt import NotConnectedError
from a2amesh.observability import ServiceMetrics
from a2amesh.settings import AgentSettings, read_keys
from a2amesh.topics import PoolAddress

log = logging.getLogger(__name__)

Handler = Callable[[TaskContext], Awaitable[None]]
CancelHook = Callable[[TaskContext], Awaitable[None]]

FINISHED_TASKS_KEPT = 10_000
"""Finished tasks remembered for de-duplication and GetTask (oldest forgotten first)."""

SHUTDOWN_GRACE = 10.0
"""Seconds in-flight tasks get to finish on SIGTERM before they are handed to a pool peer or ended FAILED."""

KEEPALIVES_AT_ONCE = 64
"""Keepalives published at once, each waiting for the broker's acknowledgement. One at a time, a round of them took
longer than the requesters' stream idle timeout (30 s) once some 4,000 tasks ran: the coordinator then lost every
relay (`make bench-scale`, open streams, docs/benchmarks.md)."""


@dataclass(frozen=True, slots=True)
class ReplyAddress:
    """Where to answer one request: the requester's reply topic and the Correlation Data to echo."""

    topic: str
    correlation: bytes


@dataclass(frozen=True, slots=True)
class IncomingRequest:
    """One request as the transport hands it over: the raw JSON-RPC payload, where to answer, and the
    per-request authorization it carried (None when it carried none)."""

    payload: bytes
    reply_to: ReplyAddress
    authorization: str | None = None


class Outbox(Protocol):
    """What the task machine needs of a transport. A publish that finds no broker within its wait raises
    `NotConnectedError`."""

    @property
    def connected(self) -> bool:
        """Whether publishing can happen now (keepalives are skipped while not)."""
        ...

    async def reply(self, to: ReplyAddress, response: JsonRpcResponse) -> None:
        """Send one JSON-RPC response (an error, a task, a snapshot)."""
        ...

    async def stream(self, subscriber: Subscriber, item: StreamResponse, body: bytes) -> None:
        """Send one stream item (`body`: its JSON, serialized once for every listener and the event topic)."""
        ...

    async def keepalive(self, subscriber: Subscriber, body: bytes) -> None:
        """Re-send a running task's status to a streaming requester, marked as activity only."""
        ...

    async def record(self, body: bytes) -> None:
        """Publish one task event for the durable record (the agent's event topic)."""
        ...


class TaskMachine:
    """An agent's tasks: answers each JSON-RPC request, runs each task's handler within the agent's slots, and
    reports every event through the outbox to the requesters listening and to the record."""

    def __init__(
        self,
        card: AgentCard,
        handler: Handler,
        settings: AgentSettings,
        outbox: Outbox,
        *,
        pooled: bool = False,
        metrics: ServiceMetrics | None = None,
        on_cancel: CancelHook | None = None,
    ) -> None:
        """`pooled`: the agent serves a pool, so a task cut short by a stop may be handed to a peer."""
        self.card = card
        self.handler = tracing.traced_handler(handler, settings.agent_id)  # the handler itself when tracing is off
        self.settings = settings
        self.outbox = outbox
        self.pooled = pooled
        self.on_cancel = on_cancel
        self.metrics = metrics or ServiceMetrics(settings.agent_id)
        self._token_digests = [
            hashlib.sha256(token.encode()).digest()
            for token in read_keys(settings.auth_tokens, settings.auth_tokens_file)
        ]
        self._verifier = None
        if settings.auth_jwks_url:
            from a2amesh.tokens import TokenVerifier  # PyJWT: only for an agent that verifies tokens

            own = settings.address(settings.agent_id).request_topic
            pool = [PoolAddress(settings.org, settings.unit, settings.pool).topic] if settings.pool else []
            self._verifier = TokenVerifier(settings.auth_jwks_url, [own, *pool], settings.auth_issuer)
        self.tasks: OrderedDict[str, TaskRecord | FinishedTask] = OrderedDict()
        """Running and interrupted tasks in full, finished ones compactly (FinishedTask)."""
        self.slots = asyncio.Semaphore(settings.max_concurrent)
        self._running = 0
        self.accepting = True
        """False once stopping: new tasks are refused (retryable), the ones running finish."""

    @property
    def in_flight(self) -> int:
        """Tasks started and not yet finished (a counter: this is asked on every request)."""
        return self._running

    @property
    def load(self) -> float:
        """In-flight tasks per concurrent slot: 0 idle, 1 saturated, above 1 queueing."""
        return self.in_flight / max(self.settings.max_concurrent, 1)

    # -- requests ----------------------------------------------------------------------------------------
    async def handle(self, request: IncomingRequest) -> None:
        """Answer one request: an error reply, or a task started, continued, attached to or reported on."""
        reply_to = request.reply_to
        try:
            decoded = json.loads(request.payload)
        except (ValueError, RecursionError) as error:  # bad JSON or UTF-8, over-long integers, too deep nesting
            await self.outbox.reply(
                reply_to, error_response(None, ErrorCode.PARSE_ERROR, f"Invalid JSON payload: {error}")
            )
            return
        try:
            call = JsonRpcRequest.model_validate(decoded)
        except ValidationError as error:
            request_id = decoded.get("id") if isinstance(decoded, dict) else None
            await self.outbox.reply(
                reply_to,
                error_response(
                    request_id if isinstance(request_id, str | int) else None,
                    ErrorCode.INVALID_REQUEST,
                    f"Invalid JSON-RPC request: {_brief(error)}",
                ),
            )
            return
        refusal = await self._authorization_refusal(request.authorization)
        if refusal is not None:
            await self.outbox.reply(
                reply_to, error_response(call.id, ErrorCode.INVALID_REQUEST, refusal, a2a_error_info("UNAUTHENTICATED"))
            )
            return
        method = _METHODS.get(call.method)
        if method is None:
            await self.outbox.reply(
                reply_to, error_response(call.id, ErrorCode.METHOD_NOT_FOUND, f"Method not found: {call.method}")
            )
            return
        try:
            await method(self, call, reply_to)
        except ValidationError as error:
            await self.outbox.reply(
                reply_to, error_response(call.id, ErrorCode.INVALID_PARAMS, f"Invalid params: {_brief(error)}")
            )

    async def _authorization_refusal(self, presented: str | None) -> str | None:
        """Why the request is refused, when this agent wants per-request authorization and it is missing or wrong
        (deliberately without detail): one of its static tokens, or a token the coordinator minted for this agent's
        audience (a2amesh.tokens). The token is only checked, never stored, logged or echoed."""
        if not self._token_digests and self._verifier is None:
            return None
        presented = presented or ""
        if presented[:7].lower() != "bearer " or not presented[7:].strip():
            return "authorization required"
        token = presented[7:].strip()
        digest = hashlib.sha256(token.encode()).digest()
        if any(hmac.compare_digest(digest, known) for known in self._token_digests):
            return None
        if self._verifier is not None and token.count(".") == 2:
            return await self._verifier.refusal(token)
        return "authorization refused"

    async def _send_message(self, request: JsonRpcRequest, reply_to: ReplyAddress) -> None:
        params = SendMessageRequest.model_validate(request.params)
        message = params.message
        streaming = request.method == "SendStreamingMessage"
        if not is_valid_task_id(message.task_id):
            await self.outbox.reply(
                reply_to,
                error_response(
                    request.id, ErrorCode.INVALID_PARAMS, "message.taskId must be a requester-generated UUID"
                ),
            )
            return
        if not message.parts:
            await self.outbox.reply(
                reply_to, error_response(request.id, ErrorCode.INVALID_PARAMS, "message.parts must not be empty")
            )
            return
        subscriber = Subscriber(reply_to.topic, reply_to.correlation, request.id, streaming)
        record = self.tasks.get(message.task_id or "")
        if record is not None:
            if message.context_id and record.context_id and message.context_id != record.context_id:
                await self.outbox.reply(
                    reply_to,
                    error_response(
                        request.id, ErrorCode.INVALID_PARAMS, "contextId does not match the one stored for this task id"
                    ),
                )
                return
            unfinished = record.unfinished
            if unfinished is not None and unfinished.current_state.is_interrupted and not unfinished.active:
                await self._continue(unfinished, params, subscriber)
            else:
                await self._attach(record, subscriber)  # a retry of a request already taken: same task, new inbox
            return
        if not self.accepting or self.in_flight >= self.settings.max_concurrent + self.settings.max_queued:
            await self.outbox.reply(
                reply_to,
                binding_error_response(
                    request.id,
                    BindingError.RESPONDER_UNAVAILABLE,
                    "agent is saturated or stopping; retry later or elsewhere",
                ),
            )
            return
        context_id = message.context_id or str(uuid.uuid4())
        message = message.model_copy(update={"context_id": context_id})
        task = Task(
            id=message.task_id or "",
            context_id=context_id,
            status=TaskStatus(state=TaskState.SUBMITTED, timestamp=utc_now()),
            history=[message],
            metadata=_routing_of(params.metadata),
        )
        record = TaskRecord(task=task, request=request, request_metadata=params.metadata or {})
        self._remember(record)
        record.subscribers.append(subscriber)
        if params.configuration and params.configuration.return_immediately and not streaming:
            await self._finish_subscriber(record, subscriber)  # the task as submitted is SendMessage's result
        self._start(record)

    async def _continue(self, record: TaskRecord, params: SendMessageRequest, subscriber: Subscriber) -> None:
        """A follow-up to an INPUT_REQUIRED/AUTH_REQUIRED task: same task, the user's answer, a new turn."""
        message = params.message.model_copy(update={"context_id": record.context_id})
        # Resumed: no longer interrupted. A snapshot still saying INPUT_REQUIRED would end every listener's stream.
        history = [*(record.task.history or []), message]
        status = TaskStatus(state=TaskState.SUBMITTED, timestamp=utc_now())
        record.task = record.task.model_copy(update={"history": history, "status": status})
        record.subscribers.append(subscriber)
        self._start(record)

    async def _attach(self, record: TaskRecord | FinishedTask, subscriber: Subscriber) -> None:
        snapshot = StreamResponse(task=record.task)
        if subscriber.streaming:
            await self.outbox.stream(subscriber, snapshot, snapshot.to_json().encode())
        if record.current_state.ends_stream and not record.active:
            await self._finish_subscriber(record, subscriber, remove=False)
            return
        record.subscribers.append(subscriber)

    async def _get_task(self, request: JsonRpcRequest, reply_to: ReplyAddress) -> None:
        params = GetTaskRequest.model_validate(request.params)
        record = self.tasks.get(params.id)
        if record is None:
            await self.outbox.reply(reply_to, _task_not_found(request.id, params.id))
            return
        await self.outbox.reply(
            reply_to, result_response(request.id, record.task.with_history(params.history_length).to_wire())
        )

    async def _cancel_task(self, request: JsonRpcRequest, reply_to: ReplyAddress) -> None:
        params = CancelTaskRequest.model_validate(request.params)
        known = self.tasks.get(params.id)
        if known is None:
            await self.outbox.reply(reply_to, _task_not_found(request.id, params.id))
            return
        record = known.unfinished
        if record is None:
            await self.outbox.reply(
                reply_to,
                error_response(
                    request.id,
                    ErrorCode.TASK_NOT_CANCELABLE,
                    f"Task {params.id} is already {known.current_state.name}",
                    a2a_error_info("TASK_NOT_CANCELABLE"),
                ),
            )
            return
        if record.active and record.runner is not None:
            record.runner.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(asyncio.shield(record.runner), timeout=10)
        elif self.on_cancel is not None:  # waiting for input: the handler is not running to clean up itself
            try:
                await asyncio.wait_for(self.on_cancel(TaskContext(record, self._emit)), timeout=10)
            except Exception:
                log.exception("task %s: cancel hook failed", record.id)
        if not record.current_state.is_terminal:  # interrupted, or the handler swallowed the cancel
            await self._end(record, TaskState.CANCELED, "canceled by request")
        await self.outbox.reply(reply_to, result_response(request.id, record.task.to_wire()))
        if not record.active:  # ended here, not by its runner (which, still going, keeps it whole until it ends)
            self._keep_compact(record)

    async def _subscribe(self, request: JsonRpcRequest, reply_to: ReplyAddress) -> None:
        params = SubscribeToTaskRequest.model_validate(request.params)
        record = self.tasks.get(params.id)
        if record is None:
            await self.outbox.reply(reply_to, _task_not_found(request.id, params.id))
            return
        if record.current_state.is_terminal:
            await self.outbox.reply(
                reply_to,
                error_response(
                    request.id,
                    ErrorCode.UNSUPPORTED_OPERATION,
                    f"Task {params.id} is already {record.current_state.name}",
                    a2a_error_info("UNSUPPORTED_OPERATION"),
                ),
            )
            return
        await self._attach(record, Subscriber(reply_to.topic, reply_to.correlation, request.id, True))

    async def _unsupported(self, request: JsonRpcRequest, reply_to: ReplyAddress) -> None:
        await self.outbox.reply(
            reply_to,
            error_response(
                request.id,
                ErrorCode.UNSUPPORTED_OPERATION,
                f"{request.method} is not supported by mesh agents",
                a2a_error_info("UNSUPPORTED_OPERATION"),
            ),
        )

    # -- running a task ----------------------------------------------------------------------------------
    def _start(self, record: TaskRecord) -> None:
        """Run the task (and first publish it as it stands) in a task of its own, so the request pump is free to
        take the next request at once instead of waiting on this one's first publishes."""
        self._running += 1  # counted from creation, so admission sees it before the task first runs
        record.runner = asyncio.create_task(
            self._run(record, StreamResponse(task=record.task)), name=f"task-{record.id}"
        )

    async def _run(self, record: TaskRecord, first: StreamResponse) -> None:
        try:
            await self._work(record, first)
        finally:
            self._running -= 1
            self._keep_compact(record)

    def _keep_compact(self, record: TaskRecord) -> None:
        """Once a task is final and nothing runs it any more, keep only what is asked of it later (an interrupted
        one stays whole: it goes on)."""
        if record.current_state.is_terminal and self.tasks.get(record.id) is record:
            self.tasks[record.id] = FinishedTask.of(record)

    async def _work(self, record: TaskRecord, first: StreamResponse) -> None:
        context = TaskContext(record, self._emit)
        try:
            await self._emit(record, first)  # the Task before any event of it; canceled here, it still ends below
            async with self.slots:
                if record.current_state is not TaskState.WORKING:
                    await context.working()
                await self.handler(context)
            if not record.current_state.ends_stream:
                await context.complete()
        except asyncio.CancelledError:
            if record.stopped is Stop.HANDED_OVER:
                return  # a pool peer runs it now, under the same task id, and reports its events
            if record.stopped is Stop.SHUTDOWN:
                await self._end(record, TaskState.FAILED, "agent stopped before the task finished")
            else:
                await self._end(record, TaskState.CANCELED, "canceled by request")
        except TaskRejectedError as error:
            await self._end(record, TaskState.REJECTED, str(error) or "rejected")
        except TaskFailedError as error:
            await self._end(record, TaskState.FAILED, str(error) or "failed")
        except NotConnectedError:
            # Say so where it can still be read (GetTask, SubscribeToTask): a task left WORKING with nothing running
            # it would be followed for nothing. The requester ends it FAILED with its own reason.
            log.error("task %s: lost the broker while reporting", record.id)
            if not record.current_state.is_terminal:
                reason = "agent lost the broker while reporting the task"
                status = TaskStatus(
                    state=TaskState.FAILED,
                    message=agent_message(reason, record.id, record.context_id),
                    timestamp=utc_now(),
                )
                event = TaskStatusUpdateEvent(task_id=record.id, context_id=record.context_id, status=status)
                record.apply(StreamResponse(status_update=event))
        except Exception as error:
            log.exception("task %s: handler raised", record.id, extra={"task_id": record.id})
            await self._end(record, TaskState.FAILED, f"agent error: {type(error).__name__}: {error}")

    async def _end(self, record: TaskRecord, state: TaskState, reason: str) -> None:
        if record.current_state.is_terminal:
            return
        status = TaskStatus(
            state=state, message=agent_message(reason, record.id, record.context_id), timestamp=utc_now()
        )
        event = TaskStatusUpdateEvent(task_id=record.id, context_id=record.context_id, status=status)
        with contextlib.suppress(NotConnectedError):
            await self._emit(record, StreamResponse(status_update=event))

    async def _emit(self, record: TaskRecord, item: StreamResponse) -> None:
        """Apply an event, record it on the event topic, and deliver it to everyone listening."""
        record.apply(item)
        state = item.state
        if state is not None and state.ends_stream:
            skill = record.request_metadata.get(SKILL_METADATA_KEY)  # the metrics keep a bounded set of its values
            self.metrics.task_ended(state.name, time.monotonic() - record.started, skill)
            # Completing is the common case, which the metrics count: a line each only at DEBUG (under load the
            # line cost more than the rest of the task's logging-free work). Every other ending is logged.
            level = logging.DEBUG if state is TaskState.COMPLETED else logging.INFO
            if log.isEnabledFor(level):
                extra = {"task_id": record.id, "agent": self.settings.agent_id, "context_id": record.context_id}
                log.log(level, "task %s %s", record.id, state.name, extra=extra)
        body = item.to_json().encode()  # serialized once: the event and every streaming reply carry the same item
        await self.outbox.record(body)
        ends = item.ends_stream
        for subscriber in list(record.subscribers):
            if subscriber.streaming:
                await self.outbox.stream(subscriber, item, body)
                if ends:
                    record.subscribers.remove(subscriber)
            elif ends:
                await self._finish_subscriber(record, subscriber)

    async def _finish_subscriber(
        self, record: TaskRecord | FinishedTask, subscriber: Subscriber, remove: bool = True
    ) -> None:
        """A one-shot requester gets the task as it stands (SendMessage's result)."""
        if not subscriber.streaming:
            result = result_response(subscriber.request_id, {"task": record.task.to_wire()})
            await self.outbox.reply(ReplyAddress(subscriber.reply_topic, subscriber.correlation), result)
        if remove and subscriber in record.subscribers:
            record.subscribers.remove(subscriber)

    def _remember(self, record: TaskRecord) -> None:
        """Keep the task; forget the oldest finished ones past FINISHED_TASKS_KEPT (running ones go to the back)."""
        self.tasks[record.id] = record
        for _ in range(len(self.tasks) - FINISHED_TASKS_KEPT):
            oldest_id, oldest = next(iter(self.tasks.items()))
            if oldest.active:
                self.tasks.move_to_end(oldest_id)
            else:
                del self.tasks[oldest_id]

    # -- staying followed, and stopping ------------------------------------------------------------------
    async def keep_alive(self, stop: asyncio.Event) -> None:
        """Every keepalive_interval, re-send each running task's current status to the requesters streaming it,
        marked as a keepalive: a task that reports nothing for long stays followed instead of timing out."""
        interval = self.settings.keepalive_interval
        if interval <= 0:
            return
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)
            if stop.is_set() or not self.outbox.connected:
                continue
            followed = [
                record
                for known in list(self.tasks.values())
                if (record := known.unfinished) is not None and record.active and record.subscribers
            ]
            for start in range(0, len(followed), KEEPALIVES_AT_ONCE):
                await asyncio.gather(*map(self._keepalive_quietly, followed[start : start + KEEPALIVES_AT_ONCE]))

    async def _keepalive_quietly(self, record: TaskRecord) -> None:
        with contextlib.suppress(NotConnectedError):
            await self._send_keepalive(record)

    async def _send_keepalive(self, record: TaskRecord) -> None:
        event = TaskStatusUpdateEvent(task_id=record.id, context_id=record.context_id, status=record.task.status)
        body = StreamResponse(status_update=event).to_json().encode()
        for subscriber in list(record.subscribers):
            if subscriber.streaming:
                await self.outbox.keepalive(subscriber, body)

    async def drain(self) -> None:
        """Stopping (after `accepting` went False): give running tasks SHUTDOWN_GRACE to finish, then hand each
        one left to a pool peer where it may run again, and end the others FAILED."""
        runners = [record.runner for record in self.tasks.values() if record.active and record.runner]
        if runners:
            log.info("stopping: waiting up to %ss for %d task(s)", SHUTDOWN_GRACE, len(runners))
            await asyncio.wait(runners, timeout=SHUTDOWN_GRACE)
        for known in list(self.tasks.values()):
            runner = known.runner
            if runner is None or runner.done():
                continue
            record = known.unfinished  # None: it ended, and its runner is only finishing its last publishes
            if record is not None:
                handed = await self._hand_over(record)
                record.stopped = Stop.HANDED_OVER if handed else Stop.SHUTDOWN
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await runner

    def _may_hand_over(self, record: TaskRecord) -> bool:
        """Whether a peer may run this task again from the start: a pool to hand it to, a skill the card declares
        re-runnable, one turn only (a resumed task's later turns would be lost), someone waiting for the result,
        and no per-request authorization (its token is never kept, so it cannot go along)."""
        if not self.pooled or self._token_digests or not record.subscribers:
            return False
        if record.request.method not in ("SendMessage", "SendStreamingMessage"):
            return False
        skills = rerunnable_skills(self.card)
        skill = record.request_metadata.get(SKILL_METADATA_KEY)
        if not skills or (skill is not None and skill not in skills):
            return False
        return sum(1 for message in record.task.history or [] if message.role == Role.USER) <= 1

    async def _hand_over(self, record: TaskRecord) -> bool:
        """Give the task back to its requesters: each gets the retryable -32004 (responder unavailable), on which a
        requester sends it again to a live pool member under the same task id (the coordinator does). False when
        it may not be run again (it then ends FAILED)."""
        if not self._may_hand_over(record):
            return False
        reason = "agent stopping before the task finished; send it again to the pool under the same task id"
        try:
            for subscriber in record.subscribers:
                refusal = binding_error_response(subscriber.request_id, BindingError.RESPONDER_UNAVAILABLE, reason)
                await self.outbox.reply(ReplyAddress(subscriber.reply_topic, subscriber.correlation), refusal)
        except NotConnectedError:
            return False
        log.info("task %s: handed back to its requester(s) for a pool peer", record.id)
        record.subscribers.clear()
        return True


def _task_not_found(request_id: Any, task_id: str) -> JsonRpcResponse:
    return error_response(
        request_id,
        ErrorCode.TASK_NOT_FOUND,
        f"Task {task_id} not found",
        a2a_error_info("TASK_NOT_FOUND", {"taskId": task_id}),
    )


def _brief(error: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in error.errors()[:3])


_METHODS: dict[str, Callable[[TaskMachine, JsonRpcRequest, ReplyAddress], Awaitable[None]]] = {
    "SendMessage": TaskMachine._send_message,
    "SendStreamingMessage": TaskMachine._send_message,
    "GetTask": TaskMachine._get_task,
    "CancelTask": TaskMachine._cancel_task,
    "SubscribeToTask": TaskMachine._subscribe,
    "ListTasks": TaskMachine._unsupported,
    "CreateTaskPushNotificationConfig": TaskMachine._unsupported,
    "GetTaskPushNotificationConfig": TaskMachine._unsupported,
    "ListTaskPushNotificationConfigs": TaskMachine._unsupported,
    "DeleteTaskPushNotificationConfig": TaskMachine._unsupported,
    "GetExtendedAgentCard": TaskMachine._unsupported,
}


def _routing_of(metadata: dict[str, Any] | None) -> dict[str, Any] | None:
    """The routing decision a request carries, kept on the Task's metadata (ROUTING_METADATA_KEY)."""
    routing = (metadata or {}).get(ROUTING_METADATA_KEY)
    return {ROUTING_METADATA_KEY: routing} if isinstance(routing, dict) else None
