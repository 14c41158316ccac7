"""One task followed across every hop: the mesh runs with OTLP export on, pointed at a real OTLP/HTTP receiver in the
test (a Starlette app decoding ExportTraceServiceRequest protobufs); a workflow.pipeline sent through the
coordinator with the a2a-sdk client, under the caller's own `traceparent`, comes back as one trace holding the HTTP
span, the publish and process spans of every MQTT hop, and each step's work in the service that did it."""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import uvicorn
from a2a.client import A2ACardResolver, ClientConfig, ClientFactory
from a2a.types import a2a_pb2 as pb
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanProto
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from a2amesh.binding import MeshRequester
from a2amesh.topics import AgentAddress
from devstack.processes import free_port
from devstack.stack import Ports, Stack
from tests.conftest import auth_headers, collect, eventually, send_request, user_message

PIPELINE_AGENTS = {"research": "agent_research", "writer": "agent_writer", "reviewer": "agent_reviewer"}
STEPS = {
    "research": ("research", "research"),
    "write": ("writer", "write-report"),
    "review": ("reviewer", "review-report"),
}
"""Each pipeline step: the agent (and so the service) that does it, and its skill."""

REQUEST = "$a2a/v1/request/{org}/{unit}/{agent}"
REPLY = "$a2a/v1/reply/{org}/{unit}/{agent}/{inbox}"
EVENT = "$a2a/v1/event/{org}/{unit}/{agent}"


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    trace_id: str
    span_id: str
    parent_id: str
    name: str
    kind: int
    attributes: dict[str, Any]
    status_code: int
    status_message: str


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


@dataclass
class OtlpReceiver:
    """An OTLP/HTTP trace endpoint (POST /v1/traces, protobuf) keeping every span it is sent."""

    port: int = field(default_factory=free_port)
    spans: list[ReceivedSpan] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def export(self, request: Request) -> Response:
        decoded = ExportTraceServiceRequest.FromString(await request.body())
        received = []
        for resource_spans in decoded.resource_spans:
            resource = {item.key: _value(item.value) for item in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    received.append(
                        ReceivedSpan(
                            service=str(resource.get("service.name")),
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_id=span.parent_span_id.hex(),
                            name=span.name,
                            kind=span.kind,
                            attributes={item.key: _value(item.value) for item in span.attributes},
                            status_code=span.status.code,
                            status_message=span.status.message,
                        )
                    )
        with self.lock:
            self.spans.extend(received)
        body = ExportTraceServiceResponse().SerializeToString()
        return Response(body, media_type="application/x-protobuf")

    def of_trace(self, trace_id: str) -> list[ReceivedSpan]:
        with self.lock:
            return [span for span in self.spans if span.trace_id == trace_id]

    def of_service(self, service: str) -> list[ReceivedSpan]:
        with self.lock:
            return [span for span in self.spans if span.service == service]


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    collected = OtlpReceiver()
    app = Starlette(routes=[Route("/v1/traces", collected.export, methods=["POST"])])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=collected.port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "the OTLP receiver did not start"
    yield collected
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def traced_mesh(tmp_path_factory: pytest.TempPathFactory, receiver: OtlpReceiver) -> Iterator[Stack]:
    """The mesh with the pipeline's agents, every service exporting its spans to the receiver."""
    tracing_env = {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "OTEL_TRACES_SAMPLER": "parentbased_always_on",
        "NO_PROXY": "127.0.0.1,localhost",
    }
    stack = Stack(
        run_dir=tmp_path_factory.mktemp("traced"),
        ports=Ports.random(),
        agents=dict(PIPELINE_AGENTS),
        extra_env=tracing_env,
        tester=True,
    )
    stack.start()
    yield stack
    stack.stop()


def _descends(span: ReceivedSpan, ancestor: ReceivedSpan, by_id: dict[str, ReceivedSpan]) -> bool:
    """Whether `ancestor` is on `span`'s parent chain (bounded by the trace's size)."""
    current: ReceivedSpan | None = span
    for _ in range(len(by_id) + 1):
        if current is None or not current.parent_id:
            return False
        if current.parent_id == ancestor.span_id:
            return True
        current = by_id.get(current.parent_id)
    return False


def _only(spans: list[ReceivedSpan], what: str, **match: Any) -> ReceivedSpan:
    found = [span for span in spans if all(getattr(span, key) == value for key, value in match.items())]
    assert len(found) == 1, f"{what}: expected one span matching {match}, got {len(found)}"
    return found[0]


def check_pipeline_trace(
    spans: list[ReceivedSpan], trace_id: str, caller_span: str, parent_task: str, mesh: Stack
) -> None:
    """Every hop of the pipeline in one trace (asserts; called until the spans have all arrived)."""
    by_id = {span.span_id: span for span in spans}
    # the HTTP server span continues the caller's trace and says what was asked
    servers = [s for s in spans if s.kind == SpanProto.SPAN_KIND_SERVER]
    http_span = _only(servers, "HTTP server span", service="coordinator", name="POST")
    assert http_span.parent_id == caller_span
    assert http_span.attributes["a2a.method"] == "SendMessage"
    assert http_span.attributes["a2a.task.id"] == parent_task
    assert http_span.attributes["a2a.skill"] == "workflow.pipeline"

    # the coordinator's request to its hosted workflows agent crosses the broker and back
    workflow = _only(spans, "the workflow's work", service="coordinator", name="task workflow.pipeline")
    assert workflow.attributes["a2a.task.id"] == parent_task
    assert workflow.attributes["a2a.task.state"] == "TASK_STATE_COMPLETED"
    assert _descends(workflow, http_span, by_id)

    for step, (agent, skill) in STEPS.items():
        step_span = _only(spans, f"step {step}", service="coordinator", name=f"step {step}")
        assert step_span.parent_id == workflow.span_id, f"step {step} is not a child of the parent task"
        assert step_span.attributes["a2a.task.state"] == "TASK_STATE_COMPLETED"
        assert step_span.attributes["a2a.agent"].endswith(f"/{agent}")

        destination = f"$a2a/v1/request/{mesh.org}/{mesh.unit}/{agent}"
        published = [
            s
            for s in spans
            if s.name == f"publish {REQUEST}" and s.attributes.get("messaging.destination.name") == destination
        ]
        assert published and all(s.kind == SpanProto.SPAN_KIND_PRODUCER for s in published)
        assert all(s.service == "coordinator" and _descends(s, step_span, by_id) for s in published)

        processed = [s for s in spans if s.service == agent and s.name == f"process {REQUEST}"]
        assert processed and all(s.kind == SpanProto.SPAN_KIND_CONSUMER for s in processed)
        assert {s.parent_id for s in processed} <= {s.span_id for s in published}

        work = _only(spans, f"{agent}'s work", service=agent, name=f"task {skill}")
        assert work.attributes["a2a.agent"] == agent
        assert work.attributes["a2a.skill"] == skill
        assert work.attributes["a2a.task.state"] == "TASK_STATE_COMPLETED"
        assert work.attributes["a2a.task.id"] == step_span.attributes["a2a.child.task.id"]
        assert _descends(work, step_span, by_id)

        # its replies and task events are published in the trace (the first, the task as submitted, before the work
        # starts; the rest by the work) and processed by whoever reads them: the coordinator, the task store
        replies = [s for s in spans if s.service == agent and s.name == f"publish {REPLY}"]
        events_out = [s for s in spans if s.service == agent and s.name == f"publish {EVENT}"]
        assert replies and events_out
        assert all(any(_descends(s, p, by_id) for p in processed) for s in replies + events_out)
        assert any(_descends(s, work, by_id) for s in replies) and any(_descends(s, work, by_id) for s in events_out)
        assert any(
            s.service == "coordinator" and s.name == f"process {REPLY}" and by_id[s.parent_id] in replies
            for s in spans
            if s.parent_id in by_id
        ), f"no reply of {agent} processed by the coordinator"
        assert any(
            s.service == "taskstore" and s.name == f"process {EVENT}" and by_id[s.parent_id] in events_out
            for s in spans
            if s.parent_id in by_id
        ), f"no event of {agent} processed by the task store"

    # everything is one trace, and no span names an id
    assert {span.trace_id for span in spans} == {trace_id}
    assert not any(parent_task in span.name for span in spans)


async def test_a_pipeline_is_one_trace_across_http_mqtt_and_every_agent(
    traced_mesh: Stack, receiver: OtlpReceiver
) -> None:
    trace_id, caller_span = secrets.token_hex(16), secrets.token_hex(8)
    headers = {**auth_headers(traced_mesh), "traceparent": f"00-{trace_id}-{caller_span}-01"}
    async with httpx.AsyncClient(timeout=60.0, headers=headers) as http:
        card = await A2ACardResolver(http, traced_mesh.coordinator_url).get_agent_card()
        client = ClientFactory(ClientConfig(httpx_client=http, streaming=True)).create(card)
        request = send_request(user_message("how do retained messages work"), skill="workflow.pipeline", audience="ops")
        events = await collect(client, request)
    assert events[-1].status_update.status.state == pb.TASK_STATE_COMPLETED
    parent_task = events[-1].status_update.task_id

    async def arrived() -> list[ReceivedSpan] | None:
        spans = receiver.of_trace(trace_id)
        try:
            check_pipeline_trace(spans, trace_id, caller_span, parent_task, traced_mesh)
        except (AssertionError, KeyError):
            return None  # not all exported yet (each service flushes every 200 ms)
        return spans

    try:
        await eventually(arrived, timeout=30, what="the pipeline's spans at the receiver")
    except AssertionError:
        check_pipeline_trace(receiver.of_trace(trace_id), trace_id, caller_span, parent_task, traced_mesh)
        raise


async def test_a_rejected_task_carries_its_reason_and_a_caller_without_context_starts_the_trace(
    traced_mesh: Stack, receiver: OtlpReceiver
) -> None:
    """An HTTP request without `traceparent` starts its trace at the coordinator; a workflow that is rejected marks
    its span an error, with the state it ended in."""
    async with httpx.AsyncClient(timeout=60.0, headers=auth_headers(traced_mesh)) as http:
        card = await A2ACardResolver(http, traced_mesh.coordinator_url).get_agent_card()
        client = ClientFactory(ClientConfig(httpx_client=http, streaming=True)).create(card)
        empty = send_request(user_message("   "), skill="workflow.pipeline")
        events = await collect(client, empty)
    final = events[-1].status_update if events[-1].HasField("status_update") else events[-1].task
    task_id = final.task_id if events[-1].HasField("status_update") else final.id
    assert final.status.state == pb.TASK_STATE_REJECTED

    async def rejected() -> ReceivedSpan | None:
        return next(
            (
                span
                for span in receiver.of_service("coordinator")
                if span.name == "task workflow.pipeline" and span.attributes.get("a2a.task.id") == task_id
            ),
            None,
        )

    span = await eventually(rejected, timeout=30, what="the rejected workflow's span")
    assert span.attributes["a2a.task.state"] == "TASK_STATE_REJECTED"
    assert span.status_code == 2  # STATUS_CODE_ERROR
    assert "empty question" in span.status_message  # the reason the agent gave

    async def http_span_of_trace() -> ReceivedSpan | None:  # it ends (and is exported) after the stream's last event
        return next((s for s in receiver.of_trace(span.trace_id) if s.kind == SpanProto.SPAN_KIND_SERVER), None)

    http_span = await eventually(http_span_of_trace, timeout=30, what="the rejected request's HTTP span")
    assert http_span.parent_id == ""  # no caller context: the HTTP span starts the trace


async def test_an_outside_request_without_context_is_served_and_spans_are_flushed_on_sigterm(
    traced_mesh: Stack, receiver: OtlpReceiver
) -> None:
    """A requester that sends no trace context (this test's own, tracing off: an outside agent) is served as ever,
    the agent's spans starting a trace of their own; with an export delay far beyond the test, the spans still
    arrive, because SIGTERM flushes them before the agent exits."""
    echo = traced_mesh.launch(traced_mesh.agent("echo", "agent_echo", OTEL_BSP_SCHEDULE_DELAY="600000"))
    traced_mesh.wait_for(traced_mesh.agent_online("echo"), what="echo online")
    requester = MeshRequester(
        traced_mesh.tester_settings(),
        AgentAddress(traced_mesh.org, traced_mesh.unit, f"outside-{uuid.uuid4().hex[:6]}"),
    )
    stop = asyncio.Event()
    link = asyncio.create_task(requester.run(stop))
    task_id = str(uuid.uuid4())
    message = {"messageId": uuid.uuid4().hex, "role": "ROLE_USER", "taskId": task_id, "parts": [{"text": "hello"}]}
    try:
        await asyncio.wait_for(requester.link.connected.wait(), timeout=10)
        topic = AgentAddress(traced_mesh.org, traced_mesh.unit, "echo").request_topic
        result = await requester.call(topic, "SendMessage", {"message": message, "metadata": {"skill": "echo"}})
    finally:
        stop.set()
        await link
    assert result["task"]["status"]["state"] == "TASK_STATE_COMPLETED"

    assert not receiver.of_service("echo"), "exported before the schedule delay: the flush is not tested"
    assert echo.stop() == 0

    async def flushed() -> list[ReceivedSpan]:
        return receiver.of_service("echo")

    spans = await eventually(flushed, timeout=30, what="echo's spans after SIGTERM")
    work = _only(spans, "echo's work", name="task echo")
    assert work.attributes["a2a.task.id"] == task_id
    processed = _only(spans, "echo's request", name=f"process {REQUEST}", trace_id=work.trace_id)
    assert processed.parent_id == ""  # the outside request carried no context: the agent's trace starts here
    assert work.parent_id == processed.span_id
