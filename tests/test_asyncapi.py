"""docs/asyncapi.yaml (and its page, docs/asyncapi.md) is what devstack.asyncapi generates from the code, is a valid
AsyncAPI 3.0 document by the specification's own JSON schema (@asyncapi/specs, installed by `make validate-deps`),
and describes every kind of topic the mesh uses with payloads that the mesh's models accept."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from a2amesh.models import StreamResponse, TaskState, TaskStatus, TaskStatusUpdateEvent
from a2amesh.settings import AgentSettings
from a2amesh.topics import AgentAddress, PoolAddress, TopicKind, parse_topic
from agent_echo.agent import EchoAgent
from devstack.asyncapi import document, to_markdown, to_yaml

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
SPEC_SCHEMA = (
    REPO / "infra" / "validate" / "node_modules" / "@asyncapi" / "specs" / "schemas" / "3.0.0-without-$id.json"
)


def check_jsonschema(schema: Path, document_path: Path) -> subprocess.CompletedProcess[str]:
    assert schema.exists(), "the AsyncAPI schema is not installed: run `make validate-deps` (npm ci in infra/validate)"
    argv = [str(Path(sys.executable).parent / "check-jsonschema"), "--schemafile", str(schema), str(document_path)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=110, check=False)


def explain(result: subprocess.CompletedProcess[str]) -> str:
    return f"$ {shlex.join(result.args)}\n(exit {result.returncode})\n{result.stdout}\n{result.stderr}"


def test_the_committed_document_is_the_generated_one() -> None:
    data = document()
    assert (DOCS / "asyncapi.yaml").read_text() == to_yaml(data), "docs/asyncapi.yaml is stale: run `make asyncapi`"
    assert (DOCS / "asyncapi.md").read_text() == to_markdown(data), "docs/asyncapi.md is stale: run `make asyncapi`"


def test_the_document_is_valid_asyncapi() -> None:
    result = check_jsonschema(SPEC_SCHEMA, DOCS / "asyncapi.yaml")
    assert result.returncode == 0, explain(result)


def test_the_validator_rejects_a_broken_document(tmp_path: Path) -> None:
    """Negative control: an operation with an action AsyncAPI 3 does not have fails validation."""
    broken = document()
    broken["operations"]["publishCard"]["action"] = "publish"
    path = tmp_path / "asyncapi.yaml"
    path.write_text(yaml.safe_dump(broken))
    result = check_jsonschema(SPEC_SCHEMA, path)
    assert result.returncode != 0, explain(result)


def references(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [r for v in node.values() for r in references(v)]
    if isinstance(node, list):
        return [r for item in node for r in references(item)]
    return []


def test_every_reference_resolves() -> None:
    data = document()
    for ref in references(data):
        assert ref.startswith("#/"), ref
        node: Any = data
        for part in ref[2:].split("/"):
            assert isinstance(node, dict) and part in node, f"{ref} does not resolve"
            node = node[part]


def test_every_kind_of_topic_is_a_channel_whose_address_the_topics_module_parses() -> None:
    channels = document()["channels"]
    assert set(channels) == {kind.value for kind in TopicKind}
    values = {"org": "acme", "unit": "default", "agent": "echo", "suffix": "r1", "pool": "writers"}
    for name, channel in channels.items():
        topic = channel["address"].format(**values)
        assert parse_topic(topic).kind is TopicKind(name)
    assert channels["request"]["address"].format(**values) == AgentAddress("acme", "default", "echo").request_topic
    assert channels["pool"]["address"].format(**values) == PoolAddress("acme", "default", "writers").topic


def payload_validator(data: dict[str, Any], schema_name: str) -> Draft202012Validator:
    """A validator for one payload schema, resolving its references within the document."""
    registry = Registry().with_resource("urn:asyncapi", Resource.opaque(data))
    schema = {"$ref": f"urn:asyncapi#/components/schemas/{schema_name}"}
    return Draft202012Validator(schema, registry=registry)


def test_payload_schemas_accept_what_the_mesh_sends_and_refuse_what_it_refuses() -> None:
    data = json.loads(json.dumps(document()))
    card = EchoAgent(AgentSettings(agent_id="echo")).card()
    payload_validator(data, "AgentCard").validate(json.loads(card.to_json()))
    event = StreamResponse(
        status_update=TaskStatusUpdateEvent(task_id="t", context_id="c", status=TaskStatus(state=TaskState.WORKING))
    )
    payload_validator(data, "StreamResponse").validate(json.loads(event.to_json()))
    request = {"jsonrpc": "2.0", "id": 1, "method": "GetTask", "params": {"id": "t"}}
    payload_validator(data, "JsonRpcRequest").validate(request)
    assert not payload_validator(data, "JsonRpcRequest").is_valid({**request, "method": "Nope"})
    reply = {"jsonrpc": "2.0", "id": 1, "result": json.loads(event.to_json())}
    payload_validator(data, "JsonRpcResponse").validate(reply)
    assert not payload_validator(data, "JsonRpcResponse").is_valid({"jsonrpc": "2.0", "id": 1})


@pytest.mark.parametrize("channel", ["discovery", "request", "reply", "event", "pool"])
def test_each_channel_documents_its_user_properties_or_mqtt_properties(channel: str) -> None:
    data = document()
    [message_ref] = data["channels"][channel]["messages"].values()
    message = data["components"]["messages"][message_ref["$ref"].rsplit("/", 1)[1]]
    assert message["headers"]["properties"], f"{channel}: no user properties documented"
    assert message["bindings"]["mqtt"]["contentType"] == "application/json"


@pytest.mark.parametrize("channel", ["request", "reply", "event", "pool"])
def test_the_hops_of_a_task_document_the_trace_context_they_carry(channel: str) -> None:
    """Requests, replies and task events carry W3C trace context as the user properties a2amesh.tracing writes; the
    documented `traceparent` accepts what the OpenTelemetry propagator writes and refuses a malformed one."""
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    from a2amesh.tracing import TRACE_PROPERTIES, TRACEPARENT

    data = document()
    [message_ref] = data["channels"][channel]["messages"].values()
    headers = data["components"]["messages"][message_ref["$ref"].rsplit("/", 1)[1]]["headers"]["properties"]
    assert set(TRACE_PROPERTIES) <= set(headers), f"{channel}: no trace context documented"
    span = SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, False, TraceFlags(1))
    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier, set_span_in_context(NonRecordingSpan(span)))
    validator = Draft202012Validator(headers[TRACEPARENT])
    validator.validate(carrier[TRACEPARENT])
    assert not validator.is_valid("00-not-a-trace-01")
