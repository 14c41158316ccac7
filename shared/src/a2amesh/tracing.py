"""OpenTelemetry traces across the mesh: W3C trace context through MQTT 5, and the spans of each hop.

Trace context travels as MQTT 5 User Properties `traceparent` and `tracestate` (the names of the W3C "Trace Context:
MQTT" draft) on every request, reply and task event the binding publishes; an incoming HTTP `traceparent` header is
honoured by `asgi`. A message without them (an outside agent's) is handled as before and starts a trace of its own.

Configured only by the standard environment: tracing is on when OTEL_TRACES_EXPORTER names an exporter (`otlp`,
OTLP over HTTP/protobuf to OTEL_EXPORTER_OTLP_ENDPOINT; `console`), unless OTEL_SDK_DISABLED=true. Unlike the SDK's
own default, an unset OTEL_TRACES_EXPORTER means off: a mesh exports nothing it was not asked to. The resource's
service.name is OTEL_SERVICE_NAME, else the service's package (`coordinator`, `research`, ...); OTEL_TRACES_SAMPLER,
OTEL_BSP_* and OTEL_EXPORTER_OTLP_* are read by the SDK itself.

No cost when off: the environment is read once, at import; nothing of OpenTelemetry is imported, and each hook in the
binding is one check of `enabled` (docs/operations.md, "Traces")."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from a2amesh.topics import POOL_TOPIC_TEMPLATE, REQUEST_TOPIC_TEMPLATE, is_discovery_topic, topic_template

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

log = logging.getLogger(__name__)

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
TRACE_PROPERTIES = (TRACEPARENT, TRACESTATE)

EXPORTERS = ("otlp", "console")

REQUEST_TEMPLATES = frozenset({REQUEST_TOPIC_TEMPLATE, POOL_TOPIC_TEMPLATE})
"""Where requests go: a publish there is traced even outside any span (it starts the requester's trace)."""


def requested_exporters(environ: Mapping[str, str] = os.environ) -> list[str]:
    """The span exporters the environment asks for (none: tracing is off)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    names = [name.strip().lower() for name in environ.get("OTEL_TRACES_EXPORTER", "").split(",")]
    return [name for name in names if name and name != "none"]


enabled: bool = bool(requested_exporters())
"""Read once per process: every hook checks this and nothing else when tracing is off."""

if not enabled:
    # The a2a-sdk traces its own handlers when it finds the OpenTelemetry API installed (it is, for this module's
    # sake): with tracing off that would be per-request work for nothing.
    os.environ.setdefault("OTEL_INSTRUMENTATION_A2A_SDK_ENABLED", "false")


def default_service_name() -> str:
    """The running service's name from its package (`mesh_coordinator` -> coordinator, `agent_research` ->
    research), for resources when OTEL_SERVICE_NAME is not set."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    package = (spec.name.rpartition(".")[0] or spec.name) if spec is not None else ""
    for prefix in ("mesh_", "agent_"):
        if package.startswith(prefix):
            return package[len(prefix) :]
    return package or "a2amesh"


class _Tracing:
    """The SDK's pieces, set up the first time a span is wanted (never when tracing is off)."""

    def __init__(self) -> None:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: default_service_name()}
        self.provider: TracerProvider = TracerProvider(resource=Resource.create(attributes))
        for name in requested_exporters():
            exporter: SpanExporter
            if name == "otlp":
                protocol = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get(
                    "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
                )
                if protocol != "http/protobuf":
                    log.warning("OTLP protocol %r is not shipped; exporting over http/protobuf", protocol)
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

                exporter = OTLPSpanExporter()
            elif name == "console":
                exporter = ConsoleSpanExporter()
            else:
                log.warning("unknown OTEL_TRACES_EXPORTER %r ignored (use one of %s)", name, ", ".join(EXPORTERS))
                continue
            self.provider.add_span_processor(BatchSpanProcessor(exporter))
        trace.set_tracer_provider(self.provider)
        self.tracer: Tracer = self.provider.get_tracer("a2amesh")
        self.propagator = TraceContextTextMapPropagator()
        self.trace = trace


_state: _Tracing | None = None


def _tracing() -> _Tracing:
    global _state
    if _state is None:
        _state = _Tracing()
    return _state


def start() -> None:
    """Set the SDK up now (a service at startup), so the first request does not pay for it."""
    if enabled:
        _tracing()


def shutdown() -> None:
    """Export what is still buffered and stop: called as a service exits (SIGTERM), so its last spans arrive."""
    if _state is not None:
        try:
            _state.provider.shutdown()
        except Exception:  # an exporter that cannot reach its endpoint must not turn a clean exit into a crash
            log.exception("flushing traces on exit failed")


# -- MQTT: producer and consumer spans, context in User Properties ---------------------------------------------------
def _messaging_attributes(topic: str, template: str, operation: str, size: int) -> dict[str, Any]:
    """The messaging semantic conventions' attributes of one publish or process."""
    return {
        "messaging.system": "mqtt",
        "messaging.operation.type": "send" if operation == "publish" else "process",
        "messaging.operation.name": operation,
        "messaging.destination.name": topic,
        "messaging.destination.template": template,
        "messaging.message.body.size": size,
    }


async def traced_publish(
    publish: Callable[..., Awaitable[None]], topic: str, payload: bytes | str, properties: Any, **options: Any
) -> None:
    """Publish inside a producer span `publish {topic template}`, its context added to the User Properties.

    A request always is (it may start a trace: the requester's). A reply, event or card published outside any span
    is no hop of a traced task (presence, a streaming keepalive, a background reconciliation): published as it is,
    it starts no trace of its own every few seconds."""
    state = _tracing()
    template = topic_template(topic)
    if template not in REQUEST_TEMPLATES and (
        is_discovery_topic(topic) or not state.trace.get_current_span().get_span_context().is_valid
    ):
        await publish(topic, payload, properties=properties, **options)
        return
    from opentelemetry.trace import SpanKind

    from a2amesh.mqtt_compat import with_user_properties

    attributes = _messaging_attributes(topic, template, "publish", len(payload))
    with state.tracer.start_as_current_span(f"publish {template}", kind=SpanKind.PRODUCER, attributes=attributes):
        carrier: dict[str, str] = {}
        state.propagator.inject(carrier)
        await publish(topic, payload, properties=with_user_properties(properties, carrier.items()), **options)


async def traced_process(handle: Callable[[Any], Awaitable[None]], envelope: Any) -> None:
    """Handle a message inside a consumer span `process {topic template}`, a child of the context the message
    carries (a new trace when it carries none)."""
    from opentelemetry.trace import SpanKind

    state = _tracing()
    parent = state.propagator.extract(envelope.user_properties)
    template = topic_template(envelope.topic)
    attributes = _messaging_attributes(envelope.topic, template, "process", len(envelope.payload))
    with state.tracer.start_as_current_span(
        f"process {template}", context=parent, kind=SpanKind.CONSUMER, attributes=attributes
    ):
        await handle(envelope)


@contextlib.contextmanager
def processing(topic: str, user_properties: Mapping[str, str] | Iterable[tuple[str, str]], size: int) -> Iterator[None]:
    """A consumer span around the handling of one message, for consumers outside the binding (the task store's and
    the registry's FastStream subscribers). Nothing when tracing is off."""
    if not enabled:
        yield
        return
    from opentelemetry.trace import SpanKind

    state = _tracing()
    carrier = dict(user_properties)
    template = topic_template(topic)
    attributes = _messaging_attributes(topic, template, "process", size)
    with state.tracer.start_as_current_span(
        f"process {template}", context=state.propagator.extract(carrier), kind=SpanKind.CONSUMER, attributes=attributes
    ):
        yield


# -- the agent's work, and what a service knows about a task ---------------------------------------------------------
def traced_handler(handler: Callable[[Any], Awaitable[None]], agent: str) -> Callable[[Any], Awaitable[None]]:
    """The agent's handler, each run inside a span `task {skill}` with the task's ids, skill, agent and how it
    ended (an error's reason on the span's status). The handler itself when tracing is off."""
    if not enabled:
        return handler

    async def traced(task: Any) -> None:
        from opentelemetry.trace import Status, StatusCode

        from a2amesh.binding.tasks import TaskFailedError, TaskRejectedError
        from a2amesh.binding.wire import SKILL_METADATA_KEY
        from a2amesh.models import TaskState

        skill = task.metadata.get(SKILL_METADATA_KEY)
        attributes = {
            "a2a.task.id": task.id,
            "a2a.context.id": task.context_id,
            "a2a.agent": agent,
            "a2a.skill": skill if isinstance(skill, str) else "",
            "a2a.task.turn": task.turn,
        }
        tracer = _tracing().tracer
        with tracer.start_as_current_span(
            f"task {skill if isinstance(skill, str) and skill else agent}",
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                await handler(task)
            except BaseException as error:  # how the responder will end the task, and why
                if isinstance(error, TaskRejectedError):
                    ended = TaskState.REJECTED
                elif isinstance(error, Exception):
                    ended = TaskState.FAILED
                else:
                    ended = TaskState.CANCELED  # canceled by request, or the agent stopping
                span.set_attribute("a2a.task.state", ended.value)
                if isinstance(error, Exception):
                    if not isinstance(error, TaskFailedError | TaskRejectedError):
                        span.record_exception(error)
                    span.set_status(Status(StatusCode.ERROR, str(error) or type(error).__name__))
                raise
            final: TaskState = task.status  # not yet final when the handler leaves completing to the responder
            span.set_attribute("a2a.task.state", final.value if final.ends_stream else TaskState.COMPLETED.value)
            if final in (TaskState.FAILED, TaskState.REJECTED):
                span.set_status(Status(StatusCode.ERROR, final.value))

    return traced


def span(name: str, **attributes: Any) -> contextlib.AbstractContextManager[Span | None]:
    """A span of some work inside a service (a workflow step); nothing when tracing is off."""
    if not enabled:
        return contextlib.nullcontext()
    return _tracing().tracer.start_as_current_span(name, attributes=attributes)


def ended(span: Span, state: str, reason: str = "") -> None:
    """Record on `span` the state a task ended in; FAILED, REJECTED and CANCELED mark it an error, with the reason."""
    from opentelemetry.trace import Status, StatusCode

    span.set_attribute("a2a.task.state", state)
    if state in ("TASK_STATE_FAILED", "TASK_STATE_REJECTED", "TASK_STATE_CANCELED"):
        span.set_status(Status(StatusCode.ERROR, reason or state))


def annotate(**attributes: Any) -> None:
    """Add attributes (A2A method, task id, ...) to the current span, the HTTP request's in the coordinator."""
    if enabled and _state is not None:
        _state.trace.get_current_span().set_attributes(
            {key.replace("_", "."): value for key, value in attributes.items() if value is not None}
        )


# -- HTTP: the server span, honouring the caller's traceparent -------------------------------------------------------
def asgi(app: Any) -> Any:
    """`app` with a server span per HTTP request, a child of the caller's `traceparent` when it sends one; `app`
    itself when tracing is off."""
    if not enabled:
        return app
    return _TracedHttp(app)


class _TracedHttp:
    """ASGI middleware: one SERVER span per HTTP request (named by method: paths carry task ids)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        from opentelemetry.trace import SpanKind, Status, StatusCode

        state = _tracing()
        carrier = {
            key.decode("latin-1"): value.decode("latin-1")
            for key, value in scope.get("headers", ())
            if key in (b"traceparent", b"tracestate")
        }
        method = scope.get("method", "GET")
        attributes = {
            "http.request.method": method,
            "url.path": scope.get("path", "/"),
            "url.scheme": scope.get("scheme", "http"),
        }
        with state.tracer.start_as_current_span(
            method, context=state.propagator.extract(carrier), kind=SpanKind.SERVER, attributes=attributes
        ) as current:

            async def sending(message: dict[str, Any]) -> None:
                if message["type"] == "http.response.start":
                    status = int(message.get("status", 200))
                    current.set_attribute("http.response.status_code", status)
                    if status >= 500:
                        current.set_status(Status(StatusCode.ERROR, f"HTTP {status}"))
                await send(message)

            await self.app(scope, receive, sending)
