"""The coordinator's A2A request handler: the a2a-sdk serves HTTP (JSON-RPC, HTTP+JSON, SSE) and calls these
methods with protobuf requests; each is answered by delegating to an agent over MQTT or by reading the store."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from a2a.server.context import ServerCallContext
from a2a.server.request_handlers.request_handler import RequestHandler
from a2a.types import a2a_pb2 as pb
from a2a.utils import errors as sdk_errors
from google.protobuf.json_format import MessageToDict
from pydantic import ValidationError

from a2amesh import tracing
from a2amesh.binding import MeshRequester, RemoteError, RequestTooLargeError, RetryProfile
from a2amesh.binding.wire import AGENT_METADATA_KEY, ROUTING_METADATA_KEY, SKILL_METADATA_KEY, new_task_id
from a2amesh.models import (
    ErrorCode,
    ListTasksRequest,
    SendMessageRequest,
    StreamResponse,
    Task,
    TaskState,
    TaskStatus,
    utc_now,
)
from a2amesh.mqtt import EVENT_ID_PROPERTY, new_event_id, publish_properties
from a2amesh.mqtt_base import TASK_AGENT_PROPERTY
from a2amesh.observability import ServiceMetrics
from a2amesh.sdk import ModelT, SdkEvent, from_proto, to_proto, to_sdk_event
from a2amesh.settings import CoordinatorSettings
from a2amesh.topics import AgentAddress, PoolAddress, TopicError
from mesh_coordinator.agent_tokens import AgentTokens
from mesh_coordinator.audit import AuditTrail
from mesh_coordinator.auth import Principal, current_principal
from mesh_coordinator.credentials import CallerCredentials
from mesh_coordinator.directory import AgentChoice, DependencyError, RegistryClient, TaskStoreClient
from mesh_coordinator.endpoints import endpoint_of
from mesh_coordinator.live import LiveTask, TaskHub, new_context_id
from mesh_coordinator.owners import Owner, OwnerRecorder, TaskOwners, caller, reader_of
from mesh_coordinator.push import PushConfigs, PushStoreClient, WebhookPolicy
from mesh_coordinator.reconcile import Reconciler
from mesh_coordinator.recover import Resume
from mesh_coordinator.router import Endpoint, MeshRouter, RouteDecision

if TYPE_CHECKING:
    from mesh_coordinator.listing import RecentTasks

log = logging.getLogger(__name__)

_REMOTE_ERRORS: dict[int, type[sdk_errors.A2AError]] = {
    ErrorCode.TASK_NOT_FOUND: sdk_errors.TaskNotFoundError,
    ErrorCode.TASK_NOT_CANCELABLE: sdk_errors.TaskNotCancelableError,
    ErrorCode.INVALID_PARAMS: sdk_errors.InvalidParamsError,
    ErrorCode.INVALID_REQUEST: sdk_errors.InvalidRequestError,
    ErrorCode.METHOD_NOT_FOUND: sdk_errors.UnsupportedOperationError,
    ErrorCode.CONTENT_TYPE_NOT_SUPPORTED: sdk_errors.ContentTypeNotSupportedError,
}


def read_params(params: Any, model_type: type[ModelT]) -> ModelT:
    """An SDK request as our model; what the SDK's parser let through but our model refuses is the caller's
    mistake (InvalidParams), not an internal error."""
    try:
        return from_proto(params, model_type)
    except ValidationError as error:
        reasons = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'params'}: {e['msg']}" for e in error.errors()[:3])
        raise sdk_errors.InvalidParamsError(message=f"Invalid params: {reasons}") from None


def require_id(task_id: str) -> str:
    """The task id of GetTask, CancelTask and SubscribeToTask: REQUIRED, so an empty one is invalid params."""
    if not task_id:
        raise sdk_errors.InvalidParamsError(message="id is required")
    return task_id


def retry_profile(settings: CoordinatorSettings) -> RetryProfile:
    """The binding's retry profile with the coordinator's configured timeouts."""
    return RetryProfile(settings.first_reply_timeout, settings.stream_idle_timeout, settings.request_attempts)


def sdk_error(error: RemoteError) -> sdk_errors.A2AError:
    """An agent's JSON-RPC error as the a2a-sdk error the HTTP face answers with."""
    if error.binding_error is not None:
        return sdk_errors.InternalError(message=f"agent unavailable: {error.error.message}")
    if error.code == ErrorCode.UNSUPPORTED_OPERATION:
        return sdk_errors.UnsupportedOperationError(message=error.error.message)
    return _REMOTE_ERRORS.get(error.code, sdk_errors.InvalidAgentResponseError)(message=error.error.message)


class MeshRequestHandler(RequestHandler):
    """Routes each A2A operation to the right agent over MQTT, or to the task store."""

    def __init__(
        self, settings: CoordinatorSettings, requester: MeshRequester, registry: RegistryClient, store: TaskStoreClient
    ) -> None:
        self.settings = settings
        self.requester = requester
        self.registry = registry
        self.store = store
        self.hub = TaskHub()
        self._recent: RecentTasks | None = None
        self.router = MeshRouter(registry, settings.default_skill, self.hub.in_flight_to)
        self.workflows = settings.address(settings.workflows_id)
        self.identity = settings.service_address("coordinator")
        self.owners = TaskOwners(store, OwnerRecorder(requester.link, self.identity.owner_topic))
        self.audit = AuditTrail(settings.audit_file)
        public_url = settings.public_url or f"http://{settings.http_host}:{settings.http_port}"
        self.tokens = AgentTokens(settings.card_signing_key_file, public_url)
        self.credentials = CallerCredentials(adopt=self.owners.adopt, mint=self.tokens.bearer)
        self.profile = retry_profile(settings)
        self.metrics = ServiceMetrics("coordinator")
        self.metrics.track_in_flight(lambda: self.hub.in_flight)
        self.metrics.track_reconnects(lambda: self.requester.link.reconnects)
        self.reconciler = Reconciler(store, self.publish_event)
        self.webhooks = WebhookPolicy(settings.push_allowed_networks)
        self.push_store = PushStoreClient(store.base_url, store.client)
        self.push = PushConfigs(self.push_store, self.owners, self.webhooks)
        self.extended_cards: Callable[[Endpoint | None], Awaitable[pb.AgentCard]] | None = None
        """Set by the app that knows the cards (mesh_coordinator.app): the extended card of the root or an endpoint."""

    @property
    def recent(self) -> RecentTasks:
        """The tasks accepted lately, for ListTasks (mesh_coordinator.listing): made on the first send, so an idle
        coordinator carries none of it."""
        if self._recent is None:
            from mesh_coordinator.listing import RecentTasks

            self._recent = RecentTasks(self.settings.list_recent_seconds)
        return self._recent

    @contextlib.asynccontextmanager
    async def audited(self, method: str, task_id: str | None = None) -> AsyncIterator[dict[str, str]]:
        """Record the call in the audit trail with its outcome: ok, or the error it ended with. The yielded dict
        takes a task id learnt along the way (a new task's)."""
        note = {"task_id": task_id or ""}
        tracing.annotate(a2a_method=method, a2a_task_id=task_id)  # on the HTTP request's span, when tracing is on
        try:
            yield note
        except Exception as error:
            self.audit.record(current_principal.get(), method, type(error).__name__, note["task_id"])
            tracing.annotate(error_type=type(error).__name__)
            raise
        self.audit.record(current_principal.get(), method, "ok", note["task_id"])

    # -- sending ---------------------------------------------------------------------------------------------
    async def on_message_send(self, params: pb.SendMessageRequest, context: ServerCallContext) -> pb.Task | pb.Message:
        request = read_params(params, SendMessageRequest)
        return to_proto(await self.send(request, caller_headers(context), endpoint_of(context)), pb.Task)

    async def send(
        self, request: SendMessageRequest, headers: Mapping[str, str], endpoint: Endpoint | None = None
    ) -> Task:
        """SendMessage: the task once it ends (or at once with returnImmediately, or after the task timeout)."""
        live = await self.start(request, headers, endpoint)
        try:
            await asyncio.shield(live.first_item)
        except RemoteError as error:
            raise sdk_error(error) from None
        configuration = request.configuration
        if not (configuration and configuration.return_immediately):
            try:
                await asyncio.wait_for(asyncio.shield(live.ended.wait()), timeout=self.settings.task_timeout)
            except TimeoutError:
                log.warning(
                    "task %s still running after %ss; returning its current state", live.id, self.settings.task_timeout
                )
        history_length = configuration.history_length if configuration else None
        return live.task.with_history(history_length)

    async def on_message_send_stream(
        self, params: pb.SendMessageRequest, context: ServerCallContext
    ) -> AsyncGenerator[SdkEvent]:
        request = read_params(params, SendMessageRequest)
        live = await self.start(request, caller_headers(context), endpoint_of(context))
        async for item in self._relay(live, live.listen()):
            yield item

    async def _relay(self, live: LiveTask, queue: asyncio.Queue[object]) -> AsyncGenerator[SdkEvent]:
        try:
            async for item in live.events(queue):
                yield to_sdk_event(item)
        except RemoteError as error:
            raise sdk_error(error) from None

    async def start(
        self, request: SendMessageRequest, headers: Mapping[str, str], endpoint: Endpoint | None = None
    ) -> LiveTask:
        """Pick the agent, then publish the request; the relay runs on its own from here. `headers` are the
        caller's HTTP headers (lower-case names), never passed on: an agent that asks for authorization gets a
        token minted for it (mesh_coordinator.agent_tokens);
        `endpoint` is the agent endpoint the request came to (None at the root), the only agent it may reach."""
        async with self.audited("SendMessage", request.message.task_id) as note:
            live = await self._start(request, headers, endpoint)
            note["task_id"] = live.id
        return live

    async def _start(
        self, request: SendMessageRequest, headers: Mapping[str, str], endpoint: Endpoint | None
    ) -> LiveTask:
        principal = caller("send")
        message = request.message
        if not message.parts:
            raise sdk_errors.InvalidParamsError(message="message.parts must not be empty")
        push_config = request.configuration.task_push_notification_config if request.configuration else None
        if push_config is not None:  # refused before anything happens, like CreateTaskPushNotificationConfig
            await self.push.check_url(push_config.url)
        if message.task_id:
            await self.owners.check(message.task_id, principal)  # another caller's task is not found
            agent, previous = await self._agent_holding(message.task_id, endpoint)
            route = await self._route_to(agent)
            if previous is not None and previous.status.state.is_terminal:
                raise sdk_errors.UnsupportedOperationError(
                    message=f"Task {message.task_id} is already {previous.status.state.name}"
                )
            context_id = message.context_id or (previous.context_id if previous else None) or new_context_id()
            task_id = message.task_id
            decision = None
        else:
            route, decision = await self._choose_agent(request, endpoint)
            agent = route.address
            task_id, context_id = new_task_id(), message.context_id or new_context_id()
        message = message.model_copy(update={"task_id": task_id, "context_id": context_id})
        metadata = dict(request.metadata or {})
        if decision is not None:  # the agent learns the skill chosen for it, the task keeps why
            metadata |= {SKILL_METADATA_KEY: decision.skill, ROUTING_METADATA_KEY: decision.to_metadata()}
        params = request.model_copy(
            update={"message": message, "metadata": metadata or None, "configuration": None}
        ).to_wire()
        task = Task(
            id=task_id,
            context_id=context_id,
            history=[message],
            status=TaskStatus(state=TaskState.SUBMITTED, timestamp=utc_now()),
            metadata={ROUTING_METADATA_KEY: decision.to_metadata()} if decision is not None else None,
        )
        authorization = self._token(route.wants_auth, route.request_topic, principal)
        if not request.message.task_id:  # a new task belongs to its caller (a follow-up keeps its owner)
            self.owners.claim(task_id, Owner.of(principal))  # published in the background, never awaited here
        if push_config is not None:  # SendMessage's own config: every update of the task, from the first
            config = to_proto(push_config, pb.TaskPushNotificationConfig)
            config.task_id = task_id
            await self.push.create(config)
        if agent == self.workflows:  # the hosted workflows act for this caller: their steps carry its key
            self.credentials.remember(task_id, principal)
        try:
            stream = self.requester.request(
                route.request_topic, "SendStreamingMessage", params, profile=self.profile, authorization=authorization
            )
        except RequestTooLargeError as error:  # published, it would get the coordinator disconnected
            raise sdk_errors.InvalidRequestError(message=f"Payload too large for the mesh: {error}") from None
        live = LiveTask(task, agent, self._record_event, mirror=not route.records_events, wants_auth=route.wants_auth)
        if push_config is not None:
            live.on_event = self.push.wake
        skill = _skill_of(request, self.settings.default_skill)
        live.resume = Resume(
            self.requester,
            self.registry,
            self.profile,
            params,
            skill=skill,
            pool=PoolAddress(agent.org, agent.unit, route.pool) if route.pool else None,
            rerunnable=skill in route.rerunnable,
            authorization=authorization,
        )
        # No await from here to the caller's listen(): the relay cannot deliver an event before it listens.
        self.hub.start(live, stream)
        if not request.message.task_id:  # listed to its caller at once, before the store has it
            self.recent.accepted(live, Owner.of(principal))
        live.ended_callback(self._count)
        live.ended_callback(self.reconciler.watch)
        log.info("task %s -> %s", task_id, agent, extra={"task_id": task_id, "agent": str(agent)})
        tracing.annotate(a2a_task_id=task_id, a2a_context_id=context_id, a2a_agent=str(agent), a2a_skill=skill)
        return live

    def _token(self, wanted: bool, audience: str, principal: Principal) -> str | None:
        """A token minted for the agent at `audience` (its request topic) and this caller, only for an agent whose
        card asks for one: never the caller's own credential, which the agent could replay anywhere."""
        return self.tokens.bearer(audience, principal) if wanted else None

    def _count(self, live: LiveTask) -> None:
        """Metrics for a relay that ended (a final state, or an interruption waiting for the user)."""
        skill = live.resume.skill if live.resume is not None else None
        self.metrics.task_ended(live.task.status.state.name, time.monotonic() - live.started, skill, str(live.agent))

    async def _route_to(self, agent: AgentAddress) -> AgentChoice:
        """How to reach a known agent directly: from a task relayed from it, else from its card."""
        live = self.hub.first_for_agent(agent)
        if live is not None:
            return AgentChoice(agent, (), None, not live.mirror, wants_auth=live.wants_auth)
        try:
            choice = await self.registry.profile(agent)
        except DependencyError as error:
            raise sdk_errors.InternalError(message=str(error)) from None
        if choice is None:  # not (or no longer) registered: reach it directly, record its events ourselves
            return AgentChoice(agent, (), None, records_events=False)
        return AgentChoice(agent, choice.skills, choice.load, choice.records_events, None, choice.wants_auth)

    async def _choose_agent(
        self, request: SendMessageRequest, endpoint: Endpoint | None
    ) -> tuple[AgentChoice, RouteDecision | None]:
        """The agent named in metadata (`agent`), else the least-loaded online one with the named `skill`, else
        the router's choice from the message's text (with the decision, which goes into the task's metadata).
        At an agent's endpoint only that agent (or its pool) and its skills are eligible."""
        metadata = {**(request.message.metadata or {}), **(request.metadata or {})}
        if isinstance(metadata.get(AGENT_METADATA_KEY), str):
            address = self._parse_agent(metadata[AGENT_METADATA_KEY])
            if endpoint is not None and not endpoint.holds(address):
                raise sdk_errors.InvalidParamsError(message=f"this endpoint serves only agent {endpoint.name}")
            return await self._route_to(address), None
        skill = metadata.get(SKILL_METADATA_KEY)
        decision = None
        if skill is None:
            try:
                decision = await self.router.decide(request.message, endpoint)
            except DependencyError as error:
                raise sdk_errors.InternalError(message=str(error)) from None
            skill = decision.skill
        if not isinstance(skill, str) or not skill:
            raise sdk_errors.InvalidParamsError(message="metadata.skill must be a non-empty string")
        try:
            candidates = await self.router.candidates(skill, endpoint)
            if not candidates and endpoint is None:
                known = await self.registry.knows_skill(skill)
        except DependencyError as error:
            raise sdk_errors.InternalError(message=str(error)) from None
        if candidates:
            return _own_workflows_first(candidates, self.workflows)[0], decision
        if endpoint is not None:
            offered = ", ".join(s.id for s in endpoint.card.skills)
            raise sdk_errors.InvalidParamsError(message=f"agent {endpoint.name} has no skill '{skill}' ({offered})")
        if known:
            raise sdk_errors.InvalidParamsError(message=f"no agent offering skill '{skill}' is online")
        raise sdk_errors.InvalidParamsError(message=f"unknown skill '{skill}': no agent on the mesh offers it")

    def _parse_agent(self, text: str) -> AgentAddress:
        try:
            return AgentAddress.parse(text) if "/" in text else self.settings.address(text)
        except TopicError as error:
            raise sdk_errors.InvalidParamsError(message=str(error)) from None

    async def _agent_holding(self, task_id: str, endpoint: Endpoint | None = None) -> tuple[AgentAddress, Task | None]:
        """The agent that holds an existing task (for follow-ups and cancels), with the task as last known. At an
        agent's endpoint, another agent's task is not found there."""
        live = self.hub.get(task_id)
        if live is not None:
            await self._check_pinned(endpoint, live.agent, task_id)
            return live.agent, live.task
        try:
            task = await self.store.get_task(task_id)
            agent = await self.store.agent_of(task_id) if task is not None else None
        except DependencyError as error:
            raise sdk_errors.InternalError(message=str(error)) from None
        if task is None or agent is None:
            raise sdk_errors.TaskNotFoundError(message=f"Task {task_id} not found")
        await self._check_pinned(endpoint, agent, task_id)
        return agent, task

    async def _check_pinned(self, endpoint: Endpoint | None, agent: AgentAddress, task_id: str) -> None:
        """TaskNotFound unless the task's agent belongs to the endpoint (any agent does at the root)."""
        if endpoint is None or endpoint.holds(agent):
            return
        try:
            members = await self.router.members(endpoint.name)
        except DependencyError as error:
            raise sdk_errors.InternalError(message=str(error)) from None
        if agent not in members:
            raise sdk_errors.TaskNotFoundError(message=f"Task {task_id} not found at agent {endpoint.name}")

    async def _record_event(self, live: LiveTask, item: StreamResponse) -> None:
        """Record an event for the store: an outcome the coordinator decided (an agent that never answered or
        went silent), or an event relayed from an agent that does not record its own. `a2a-task-agent` names
        the agent that holds the task, so follow-ups and cancels still go there."""
        await self.publish_event(live.agent, item.to_json())

    async def publish_event(self, agent: AgentAddress, event: bytes | str) -> None:
        """Publish an event's JSON for the store, from a relay or the reconciler (which keeps outcomes packed)."""
        properties = publish_properties(user=[(EVENT_ID_PROPERTY, new_event_id()), (TASK_AGENT_PROPERTY, str(agent))])
        await self.requester.link.publish(self.identity.event_topic, event, qos=1, properties=properties)

    # -- reading ---------------------------------------------------------------------------------------------
    async def on_get_task(self, params: pb.GetTaskRequest, context: ServerCallContext) -> pb.Task | None:
        async with self.audited("GetTask", params.id):
            return await self._get_task(params, context)

    async def _get_task(self, params: pb.GetTaskRequest, context: ServerCallContext) -> pb.Task | None:
        require_id(params.id)
        principal = caller("read")
        history_length = params.history_length if params.HasField("history_length") else None
        if history_length is not None and history_length < 0:
            raise sdk_errors.InvalidParamsError(message="historyLength must not be negative")
        await self.owners.check(params.id, principal)  # after the params: a bad call is invalid whoever owns what
        endpoint = endpoint_of(context)
        if endpoint is not None:
            await self._agent_holding(params.id, endpoint)
        live = self.hub.get(params.id)
        if live is not None:
            return to_proto(live.task.with_history(history_length), pb.Task)
        seen = self.hub.latest(params.id)  # a workflow's child, followed here: its end may not be stored yet
        if seen is not None and seen.status.state.is_terminal:
            return to_proto(seen.with_history(history_length), pb.Task)
        reader = self.owners.reader_for(params.id, principal)  # its own task: not waiting for the owner record
        try:
            task = await self.store.get_task(params.id, history_length, reader=reader)
        except DependencyError as error:
            raise sdk_errors.InternalError(message=str(error)) from None
        if task is None and seen is not None:
            task = seen.with_history(history_length)
        if task is None:
            raise sdk_errors.TaskNotFoundError(message=f"Task {params.id} not found")
        return to_proto(task, pb.Task)

    async def on_list_tasks(self, params: pb.ListTasksRequest, context: ServerCallContext) -> pb.ListTasksResponse:
        async with self.audited("ListTasks"):
            return await self._list_tasks(params, context)

    async def _list_tasks(self, params: pb.ListTasksRequest, context: ServerCallContext) -> pb.ListTasksResponse:
        principal = caller("read")
        request = read_params(params, ListTasksRequest)
        query: dict[str, Any] = {k: v for k, v in request.to_wire().items() if k != "tenant"}
        endpoint = endpoint_of(context)
        try:
            if endpoint is not None:  # only the tasks of this agent (every instance of its pool, past ones too)
                query["agent"] = [str(address) for address in await self.router.members(endpoint.name)]
                if not query["agent"]:
                    return pb.ListTasksResponse()
            reader = reader_of(principal)
            page = await self.recent.page(request, query, principal, lambda q: self.store.list_tasks(q, reader))
        except ValueError as error:
            raise sdk_errors.InvalidParamsError(message=str(error)) from None
        except DependencyError as error:
            raise sdk_errors.InternalError(message=str(error)) from None
        tasks = [self._fresher(task, request) for task in page.tasks]
        if any(new is not old for new, old in zip(tasks, page.tasks, strict=True)):
            page = page.model_copy(update={"tasks": tasks})
        return to_proto(page, pb.ListTasksResponse)

    def _fresher(self, stored: Task, request: ListTasksRequest) -> Task:
        """A listed task as this coordinator last saw it, when the store has not caught up with its end yet."""
        seen = self.hub.fresher(stored)
        if seen is stored:
            return stored
        seen = seen.with_history(request.history_length)
        return seen if request.include_artifacts else seen.model_copy(update={"artifacts": None})

    async def on_cancel_task(self, params: pb.CancelTaskRequest, context: ServerCallContext) -> pb.Task | None:
        async with self.audited("CancelTask", params.id):
            return await self._cancel_task(params, context)

    async def _cancel_task(self, params: pb.CancelTaskRequest, context: ServerCallContext) -> pb.Task | None:
        principal = caller("cancel")
        await self.owners.check(require_id(params.id), principal)
        agent, task = await self._agent_holding(params.id, endpoint_of(context))
        if task is not None and task.status.state.is_terminal:
            raise sdk_errors.TaskNotCancelableError(message=f"Task {params.id} is already {task.status.state.name}")
        request: dict[str, Any] = {"id": params.id}
        if params.HasField("metadata"):
            request["metadata"] = MessageToDict(params.metadata)
        try:
            route = await self._route_to(agent)
            stream = self.requester.request(
                agent.request_topic,
                "CancelTask",
                request,
                profile=self.profile,
                authorization=self._token(route.wants_auth, agent.request_topic, principal),
            )
            result = await anext(aiter(stream.results()))
        except RemoteError as error:
            raise sdk_error(error) from None
        canceled = Task.from_wire(result)
        live = self.hub.get(params.id)
        if live is not None:
            await asyncio.wait_for(asyncio.shield(live.ended.wait()), timeout=10)
        return to_proto(canceled, pb.Task)

    async def on_subscribe_to_task(
        self, params: pb.SubscribeToTaskRequest, context: ServerCallContext
    ) -> AsyncGenerator[SdkEvent]:
        async with self.audited("SubscribeToTask", params.id):
            principal = caller("read")
            await self.owners.check(require_id(params.id), principal)
        endpoint = endpoint_of(context)
        live = self.hub.get(params.id)
        if live is not None:
            await self._check_pinned(endpoint, live.agent, params.id)
        if live is None or live.ended.is_set():
            agent, task = await self._agent_holding(params.id, endpoint)
            if task is not None and task.status.state.is_terminal:
                raise sdk_errors.UnsupportedOperationError(
                    message=f"Task {params.id} is already {task.status.state.name}"
                )
            route = await self._route_to(agent)
            live = LiveTask(
                task or Task(id=params.id, status=TaskStatus(state=TaskState.SUBMITTED)),
                agent,
                self._record_event,
                mirror=not route.records_events,
                wants_auth=route.wants_auth,
            )
            stream = self.requester.request(
                agent.request_topic,
                "SubscribeToTask",
                {"id": params.id},
                profile=self.profile,
                authorization=self._token(route.wants_auth, agent.request_topic, principal),
            )
            live.resume = Resume(self.requester, self.registry, self.profile, None)
            self.hub.start(live, stream)
            queue = live.listen()
        else:
            queue = live.listen()
            yield to_proto(live.task, pb.Task)
        async for item in self._relay(live, queue):
            yield item

    # -- not offered -----------------------------------------------------------------------------------------
    async def on_create_task_push_notification_config(
        self, params: pb.TaskPushNotificationConfig, context: ServerCallContext
    ) -> pb.TaskPushNotificationConfig:
        async with self.audited("CreateTaskPushNotificationConfig", params.task_id):
            created = await self.push.create(params)
        if (live := self.hub.get(params.task_id)) is not None:  # its updates wake the delivery worker
            live.on_event = self.push.wake
        return created

    async def on_get_task_push_notification_config(
        self, params: pb.GetTaskPushNotificationConfigRequest, context: ServerCallContext
    ) -> pb.TaskPushNotificationConfig:
        return await self.push.get(params.task_id, params.id)

    async def on_list_task_push_notification_configs(
        self, params: pb.ListTaskPushNotificationConfigsRequest, context: ServerCallContext
    ) -> pb.ListTaskPushNotificationConfigsResponse:
        return pb.ListTaskPushNotificationConfigsResponse(configs=await self.push.list(params.task_id))

    async def on_delete_task_push_notification_config(
        self, params: pb.DeleteTaskPushNotificationConfigRequest, context: ServerCallContext
    ) -> None:
        async with self.audited("DeleteTaskPushNotificationConfig", params.task_id):
            await self.push.delete(params.task_id, params.id)

    async def on_get_extended_agent_card(
        self, params: pb.GetExtendedAgentCardRequest, context: ServerCallContext
    ) -> pb.AgentCard:
        """The public card plus the mesh's live state (mesh_coordinator.extended); the transports' guards admit
        only authenticated callers."""
        if self.extended_cards is None:
            raise sdk_errors.ExtendedAgentCardNotConfiguredError
        try:
            return await self.extended_cards(endpoint_of(context))
        except DependencyError as error:
            raise sdk_errors.InternalError(message=f"mesh state unavailable: {error}") from None


def _skill_of(request: SendMessageRequest, default: str) -> str | None:
    """The skill a request asks for (metadata `skill`, else the default), as routing read it."""
    metadata = {**(request.message.metadata or {}), **(request.metadata or {})}
    skill = metadata.get(SKILL_METADATA_KEY, default)
    return skill if isinstance(skill, str) and skill else None


def _own_workflows_first(candidates: list[AgentChoice], own: AgentAddress) -> list[AgentChoice]:
    """This replica's own workflows agent before another replica's: the steps of a workflow carry the caller's
    credentials, which only the replica that accepted the task holds (mesh_coordinator.credentials)."""
    mine = [choice for choice in candidates if choice.address == own]
    return mine + [choice for choice in candidates if choice.address != own] if mine else candidates


def caller_headers(context: ServerCallContext) -> Mapping[str, str]:
    """The HTTP headers of the call the a2a-sdk routes are serving (lower-case names)."""
    return context.state.get("headers", {})
