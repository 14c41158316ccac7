"""The responder side of the binding: serves one agent on its request topic (and pool), following the profile's
Core rules — Response Topic and Correlation Data required, requester-generated Task.id de-duplicated, contextId
checked, every stream item echoing the Correlation Data — and publishes each task event for the durable record."""

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
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from pydantic import ValidationError

from a2amesh import tracing
from a2amesh.binding.tasks import (
    FinishedTask,
    Subscriber,
    TaskContext,
    TaskFailedError,
    TaskRecord,
    TaskRejectedError,
    agent_message,
)
from a2amesh.binding.wire import (
    MAX_PACKET_BYTES,
    ROUTING_METADATA_KEY,
    SKILL_METADATA_KEY,
    encode,
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
from a2amesh.mqtt import (
    AUTHORIZATION_PROPERTY,
    KEEPALIVE_PROPERTY,
    LOAD_PROPERTY,
    RESPONDER_PROPERTY,
    STATUS_PROPERTY,
    STATUS_SOURCE_PROPERTY,
    Envelope,
    MqttLink,
    NotConnectedError,
    event_properties,
    publish_properties,
)
from a2amesh.observability import ServiceMetrics
from a2amesh.settings import AgentSettings, read_keys
from a2amesh.topics import AgentAddress, PoolAddress

log = logging.getLogger(__name__)

Handler = Callable[[TaskContext], Awaitable[None]]
CancelHook = Callable[[TaskContext], Awaitable[None]]

FINISHED_TASKS_KEPT = 10_000
"""Finished tasks remembered for de-duplication and GetTask (oldest forgotten first)."""

LOAD_REPORT_INTERVAL = 1.0
"""Seconds between checks of whether the agent's load changed enough to republish its presence."""

REPORT_WAIT = 60.0
"""Seconds a running task's event or streamed reply waits for the broker (a restart) before the task gives up."""

SHUTDOWN_GRACE = 10.0
"""Seconds in-flight tasks get to finish on SIGTERM before they are handed to a pool peer or ended FAILED."""


class Responder:
    """Serves one agent: its card and presence, its requests, its task events."""

    def __init__(
        self,
        card: AgentCard,
        handler: Handler,
        settings: AgentSettings,
        metrics: ServiceMetrics | None = None,
        on_cancel: CancelHook | None = None,
    ) -> None:
        self.card = card
        self.handler = tracing.traced_handler(handler, settings.agent_id)  # the handler itself when tracing is off
        self.on_cancel = on_cancel
        self._token_digests = [
            hashlib.sha256(token.encode()).digest()
            for token in read_keys(settings.auth_tokens, settings.auth_tokens_file)
        ]
        self.settings = settings
        self.address: AgentAddress = settings.address(settings.agent_id)
        self.pool = PoolAddress(settings.org, settings.unit, settings.pool) if settings.pool else None
        self.tasks: OrderedDict[str, TaskRecord | FinishedTask] = OrderedDict()
        """Running and interrupted tasks in full, finished ones compactly (FinishedTask)."""
        self.slots = asyncio.Semaphore(settings.max_concurrent)
        self._running = 0
        self.accepting = True
        subscriptions = [self.address.request_topic]
        if self.pool:
            subscriptions.append(self.pool.shared_subscription)
        self.link = MqttLink(
            settings.mqtt,
            self.address.client_id,
            subscriptions,
            self._on_message,
            will=self._will(),
            persistent=True,
            on_connect=self._announce,
        )
        self.metrics = metrics or ServiceMetrics(settings.agent_id)
        self.metrics.track_in_flight(lambda: self.in_flight)
        self.metrics.track_reconnects(lambda: self.link.reconnects)

    # -- presence ----------------------------------------------------------------------------------------
    def _card_payload(self) -> bytes:
        return self.card.to_json().encode()

    def _will(self) -> aiomqtt.Will:
        properties = publish_properties(
            user=[(STATUS_PROPERTY, "offline"), (STATUS_SOURCE_PROPERTY, "lwt")], packet=PacketTypes.WILLMESSAGE
        )
        return aiomqtt.Will(
            self.address.discovery_topic, self._card_payload(), qos=1, retain=True, properties=properties
        )

    def _presence(self, status: str) -> Any:
        return publish_properties(
            user=[(STATUS_PROPERTY, status), (STATUS_SOURCE_PROPERTY, "agent"), (LOAD_PROPERTY, f"{self.load:.3f}")]
        )

    async def _announce(self, client: aiomqtt.Client) -> None:
        await client.publish(
            self.address.discovery_topic, self._card_payload(), qos=1, retain=True, properties=self._presence("online")
        )

    async def _report_load(self, stop: asyncio.Event) -> None:
        """Republish the card when the load figure changes (at most once per LOAD_REPORT_INTERVAL), so the
        registry can route to the least-loaded replica."""
        reported: str | None = None
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=LOAD_REPORT_INTERVAL)
            current = f"{self.load:.2f}"
            if stop.is_set() or current == reported or not self.link.connected.is_set():
                continue
            try:
                await self.link.publish(
                    self.address.discovery_topic,
                    self._card_payload(),
                    retain=True,
                    properties=self._presence("online"),
                    wait=1.0,
                )
                reported = current
            except NotConnectedError:
                continue

    @property
    def in_flight(self) -> int:
        """Tasks started and not yet finished (a counter: this is asked on every request)."""
        return self._running

    @property
    def load(self) -> float:
        """In-flight tasks per concurrent slot: 0 idle, 1 saturated, above 1 queueing."""
        return self.in_flight / max(self.settings.max_concurrent, 1)

    # -- lifecycle ---------------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Serve until `stop`; then drain, end what is left, and go offline gracefully."""
        link_stop = asyncio.Event()
        link_task = asyncio.create_task(self.link.run(link_stop))
        load_task = asyncio.create_task(self._report_load(stop))
        keepalive_task = asyncio.create_task(self._keep_alive(link_stop))  # through the drain too
        await stop.wait()
        self.accepting = False
        await self._leave_pool()
        await load_task
        await self._drain()
        client = self.link.client
        if client is not None:
            with contextlib.suppress(aiomqtt.MqttError):
                await client.publish(
                    self.address.discovery_topic,
                    self._card_payload(),
                    qos=1,
                    retain=True,
                    properties=self._presence("offline"),
                )
        link_stop.set()
        await keepalive_task
        await link_task

    async def _keep_alive(self, stop: asyncio.Event) -> None:
        """Every keepalive_interval, re-send each running task's current status to the requesters streaming it,
        marked as a keepalive: a task that reports nothing for long stays followed instead of timing out."""
        interval = self.settings.keepalive_interval
        if interval <= 0:
            return
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)
            if stop.is_set() or not self.link.connected.is_set():
                continue
            for record in list(self.tasks.values()):
                if isinstance(record, TaskRecord) and record.active and record.subscribers:
                    with contextlib.suppress(NotConnectedError):
                        await self._send_keepalive(record)

    async def _send_keepalive(self, record: TaskRecord) -> None:
        event = TaskStatusUpdateEvent(task_id=record.id, context_id=record.context_id, status=record.task.status)
        body = StreamResponse(status_update=event).to_json().encode()
        for subscriber in list(record.subscribers):
            if not subscriber.streaming:
                continue
            payload = (
                b'{"jsonrpc":"2.0","id":' + json.dumps(subscriber.request_id).encode() + b',"result":' + body + b"}"
            )
            user = [(RESPONDER_PROPERTY, self.address.agent), (KEEPALIVE_PROPERTY, "1")]
            properties = publish_properties(correlation_data=subscriber.correlation, user=user)
            await self.link.publish(subscriber.reply_topic, payload, qos=1, properties=properties, wait=1.0)

    async def _leave_pool(self) -> None:
        """Stopping: take no more pool work, so the broker gives it (and any task handed over) to the peers."""
        client = self.link.client
        if self.pool is None or self.pool.shared_subscription not in self.link.subscriptions:
            return
        self.link.subscriptions.remove(self.pool.shared_subscription)
        if client is not None:
            with contextlib.suppress(aiomqtt.MqttError):
                await client.unsubscribe(self.pool.shared_subscription, timeout=5)

    async def _drain(self) -> None:
        runners = [record.runner for record in self.tasks.values() if record.active and record.runner]
        if runners:
            log.info("stopping: waiting up to %ss for %d task(s)", SHUTDOWN_GRACE, len(runners))
            await asyncio.wait(runners, timeout=SHUTDOWN_GRACE)
        for record in list(self.tasks.values()):
            if record.active and record.runner:
                handed = await self._hand_over(record)
                record.state["handed_over" if handed else "shutdown"] = True
                record.runner.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await record.runner

    def _may_hand_over(self, record: TaskRecord) -> bool:
        """Whether a peer may run this task again from the start: a pool to hand it to, a skill the card declares
        re-runnable, one turn only (a resumed task's later turns would be lost), someone waiting for the result,
        and no per-request authorization (its token is never kept, so it cannot go along)."""
        if self.pool is None or self._token_digests or not record.subscribers:
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
                await self._publish_reply(subscriber.reply_topic, subscriber.correlation, refusal)
        except NotConnectedError:
            return False
        log.info("task %s: handed back to its requester(s) for a pool peer", record.id)
        record.subscribers.clear()
        return True

    # -- requests ----------------------------------------------------------------------------------------
    async def _on_message(self, envelope: Envelope) -> None:
        if envelope.retain:
            # A retained request would run again on every start and every new pool member: never a standing order.
            log.warning("ignoring a retained request on %s", envelope.topic)
            return
        if not envelope.response_topic or envelope.correlation_data is None:
            log.warning("dropping request on %s without Response Topic or Correlation Data", envelope.topic)
            return
        reply = _ReplyTo(self, envelope.response_topic, envelope.correlation_data)
        try:
            decoded = json.loads(envelope.payload)
        except (ValueError, RecursionError) as error:  # bad JSON or UTF-8, over-long integers, too deep nesting
            await reply.send(error_response(None, ErrorCode.PARSE_ERROR, f"Invalid JSON payload: {error}"))
            return
        try:
            request = JsonRpcRequest.model_validate(decoded)
        except ValidationError as error:
            request_id = decoded.get("id") if isinstance(decoded, dict) else None
            await reply.send(
                error_response(
                    request_id if isinstance(request_id, str | int) else None,
                    ErrorCode.INVALID_REQUEST,
                    f"Invalid JSON-RPC request: {_brief(error)}",
                )
            )
            return
        refusal = self._authorization_refusal(envelope)
        if refusal is not None:
            await reply.send(
                error_response(request.id, ErrorCode.INVALID_REQUEST, refusal, a2a_error_info("UNAUTHENTICATED"))
            )
            return
        method = _METHODS.get(request.method)
        if method is None:
            await reply.send(
                error_response(request.id, ErrorCode.METHOD_NOT_FOUND, f"Method not found: {request.method}")
            )
            return
        try:
            await method(self, request, reply)
        except ValidationError as error:
            await reply.send(error_response(request.id, ErrorCode.INVALID_PARAMS, f"Invalid params: {_brief(error)}"))

    def _authorization_refusal(self, envelope: Envelope) -> str | None:
        """Why the request is refused, when this agent wants per-request authorization and it is missing or wrong
        (deliberately without detail). The token is only compared, never stored, logged or echoed."""
        if not self._token_digests:
            return None
        presented = envelope.user_properties.get(AUTHORIZATION_PROPERTY, "")
        if presented[:7].lower() != "bearer " or not presented[7:].strip():
            return "authorization required"
        digest = hashlib.sha256(presented[7:].strip().encode()).digest()
        if not any(hmac.compare_digest(digest, known) for known in self._token_digests):
            return "authorization refused"
        return None

    async def _send_message(self, request: JsonRpcRequest, reply: _ReplyTo) -> None:
        params = SendMessageRequest.model_validate(request.params)
        message = params.message
        streaming = request.method == "SendStreamingMessage"
        if not is_valid_task_id(message.task_id):
            await reply.send(
                error_response(
                    request.id, ErrorCode.INVALID_PARAMS, "message.taskId must be a requester-generated UUID"
                )
            )
            return
        if not message.parts:
            await reply.send(error_response(request.id, ErrorCode.INVALID_PARAMS, "message.parts must not be empty"))
            return
        subscriber = Subscriber(reply.topic, reply.correlation, request.id, streaming)
        record = self.tasks.get(message.task_id or "")
        if record is not None:
            if message.context_id and record.context_id and message.context_id != record.context_id:
                await reply.send(
                    error_response(
                        request.id, ErrorCode.INVALID_PARAMS, "contextId does not match the one stored for this task id"
                    )
                )
                return
            if isinstance(record, TaskRecord) and record.current_state.is_interrupted and not record.active:
                await self._continue(record, params, subscriber)
            else:
                await self._attach(record, subscriber)  # a retry of a request already taken: same task, new inbox
            return
        if not self.accepting or self.in_flight >= self.settings.max_concurrent + self.settings.max_queued:
            await reply.send(
                binding_error_response(
                    request.id,
                    BindingError.RESPONDER_UNAVAILABLE,
                    "agent is saturated or stopping; retry later or elsewhere",
                )
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
            await self._deliver(subscriber, snapshot)
        if record.current_state.ends_stream and not record.active:
            await self._finish_subscriber(record, subscriber, remove=False)
            return
        record.subscribers.append(subscriber)

    async def _get_task(self, request: JsonRpcRequest, reply: _ReplyTo) -> None:
        params = GetTaskRequest.model_validate(request.params)
        record = self.tasks.get(params.id)
        if record is None:
            await reply.send(_task_not_found(request.id, params.id))
            return
        await reply.send(result_response(request.id, record.task.with_history(params.history_length).to_wire()))

    async def _cancel_task(self, request: JsonRpcRequest, reply: _ReplyTo) -> None:
        params = CancelTaskRequest.model_validate(request.params)
        record = self.tasks.get(params.id)
        if record is None:
            await reply.send(_task_not_found(request.id, params.id))
            return
        if record.current_state.is_terminal or not isinstance(record, TaskRecord):  # finished: kept compactly
            await reply.send(
                error_response(
                    request.id,
                    ErrorCode.TASK_NOT_CANCELABLE,
                    f"Task {params.id} is already {record.current_state.name}",
                    a2a_error_info("TASK_NOT_CANCELABLE"),
                )
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
        await reply.send(result_response(request.id, record.task.to_wire()))
        if not record.active:  # ended here, not by its runner (which, still going, keeps it whole until it ends)
            self._keep_compact(record)

    async def _subscribe(self, request: JsonRpcRequest, reply: _ReplyTo) -> None:
        params = SubscribeToTaskRequest.model_validate(request.params)
        record = self.tasks.get(params.id)
        if record is None:
            await reply.send(_task_not_found(request.id, params.id))
            return
        if record.current_state.is_terminal:
            await reply.send(
                error_response(
                    request.id,
                    ErrorCode.UNSUPPORTED_OPERATION,
                    f"Task {params.id} is already {record.current_state.name}",
                    a2a_error_info("UNSUPPORTED_OPERATION"),
                )
            )
            return
        await self._attach(record, Subscriber(reply.topic, reply.correlation, request.id, True))

    async def _unsupported(self, request: JsonRpcRequest, reply: _ReplyTo) -> None:
        await reply.send(
            error_response(
                request.id,
                ErrorCode.UNSUPPORTED_OPERATION,
                f"{request.method} is not supported by mesh agents",
                a2a_error_info("UNSUPPORTED_OPERATION"),
            )
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
            if record.state.pop("handed_over", False):
                return  # a pool peer runs it now, under the same task id, and reports its events
            if record.state.pop("shutdown", False):
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
                extra = {"task_id": record.id, "agent": self.address.agent, "context_id": record.context_id}
                log.log(level, "task %s %s", record.id, state.name, extra=extra)
        body = item.to_json().encode()  # serialized once: the event and every streaming reply carry the same item
        await self.link.publish(self.address.event_topic, body, qos=1, properties=event_properties(), wait=REPORT_WAIT)
        ends = item.ends_stream
        for subscriber in list(record.subscribers):
            if subscriber.streaming:
                await self._deliver(subscriber, item, body)
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
            await self._publish_reply(subscriber.reply_topic, subscriber.correlation, result)
        if remove and subscriber in record.subscribers:
            record.subscribers.remove(subscriber)

    async def _deliver(self, subscriber: Subscriber, item: StreamResponse, body: bytes | None = None) -> None:
        if body is None:
            body = item.to_json().encode()
        payload = b'{"jsonrpc":"2.0","id":' + json.dumps(subscriber.request_id).encode() + b',"result":' + body + b"}"
        if len(payload) > MAX_PACKET_BYTES - len(subscriber.reply_topic) - len(subscriber.correlation) - 1024:
            await self._publish_reply(
                subscriber.reply_topic, subscriber.correlation, result_response(subscriber.request_id, item.to_wire())
            )  # trimmed or refused
            return
        if subscriber.properties is None:  # the same for every reply to this subscriber, and slow to build
            subscriber.properties = self._reply_properties(subscriber.correlation, reused=True)
        await self.link.publish(
            subscriber.reply_topic, payload, qos=1, properties=subscriber.properties, wait=REPORT_WAIT
        )

    def _reply_properties(self, correlation: bytes, reused: bool = False) -> Any:
        user = [(RESPONDER_PROPERTY, self.address.agent)]
        return publish_properties(correlation_data=correlation, user=user, reused=reused)

    async def _publish_reply(self, topic: str, correlation: bytes, response: JsonRpcResponse) -> None:
        properties = self._reply_properties(correlation)
        limit = MAX_PACKET_BYTES - len(topic.encode()) - len(correlation) - 1024  # room for the header and properties
        await self.link.publish(topic, _fitted(response, limit), qos=1, properties=properties, wait=REPORT_WAIT)

    def _remember(self, record: TaskRecord) -> None:
        """Keep the task; forget the oldest finished ones past FINISHED_TASKS_KEPT (running ones go to the back)."""
        self.tasks[record.id] = record
        for _ in range(len(self.tasks) - FINISHED_TASKS_KEPT):
            oldest_id, oldest = next(iter(self.tasks.items()))
            if oldest.active:
                self.tasks.move_to_end(oldest_id)
            else:
                del self.tasks[oldest_id]


class _ReplyTo:
    """Where to answer one request."""

    def __init__(self, responder: Responder, topic: str, correlation: bytes) -> None:
        self.responder = responder
        self.topic = topic
        self.correlation = correlation

    async def send(self, response: JsonRpcResponse) -> None:
        await self.responder._publish_reply(self.topic, self.correlation, response)


def _task_not_found(request_id: Any, task_id: str) -> JsonRpcResponse:
    return error_response(
        request_id,
        ErrorCode.TASK_NOT_FOUND,
        f"Task {task_id} not found",
        a2a_error_info("TASK_NOT_FOUND", {"taskId": task_id}),
    )


def _fitted(response: JsonRpcResponse, limit: int) -> bytes:
    """The reply's payload within `limit` bytes: as it is, else a task result without its history (which the
    requester sent), else an error that says why (never a packet the broker would disconnect us for)."""
    payload = encode(response)
    if len(payload) <= limit:
        return payload
    result = response.result
    if response.error is None and isinstance(result, dict):
        nested = isinstance(result.get("task"), dict)  # SendMessage's {"task": ...} or a stream's Task item
        task = result["task"] if nested else result
        if "history" in task:
            slim = {key: value for key, value in task.items() if key != "history"}
            trimmed = encode(result_response(response.id, {**result, "task": slim} if nested else slim))
            if len(trimmed) <= limit:
                return trimmed
    log.warning("reply of %d bytes exceeds the broker's packet limit; answering with an error", len(payload))
    message = f"reply too large for the broker: {len(payload)} bytes, at most {limit} fit in one MQTT packet"
    return encode(error_response(response.id, ErrorCode.INTERNAL_ERROR, message))


def _brief(error: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in error.errors()[:3])


_METHODS: dict[str, Callable[[Responder, JsonRpcRequest, _ReplyTo], Awaitable[None]]] = {
    "SendMessage": Responder._send_message,
    "SendStreamingMessage": Responder._send_message,
    "GetTask": Responder._get_task,
    "CancelTask": Responder._cancel_task,
    "SubscribeToTask": Responder._subscribe,
    "ListTasks": Responder._unsupported,
    "CreateTaskPushNotificationConfig": Responder._unsupported,
    "GetTaskPushNotificationConfig": Responder._unsupported,
    "ListTaskPushNotificationConfigs": Responder._unsupported,
    "DeleteTaskPushNotificationConfig": Responder._unsupported,
    "GetExtendedAgentCard": Responder._unsupported,
}


def _routing_of(metadata: dict[str, Any] | None) -> dict[str, Any] | None:
    """The routing decision a request carries, kept on the Task's metadata (ROUTING_METADATA_KEY)."""
    routing = (metadata or {}).get(ROUTING_METADATA_KEY)
    return {ROUTING_METADATA_KEY: routing} if isinstance(routing, dict) else None
