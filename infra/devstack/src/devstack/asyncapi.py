"""The mesh's MQTT API as an AsyncAPI 3.0 document, generated from the declarations it describes: the topics that
`a2amesh.topics` builds, the payload models of `a2amesh.models` (their JSON schemas, from pydantic) and the MQTT 5
user properties named in `a2amesh.mqtt`. `make asyncapi` writes docs/asyncapi.yaml and its rendered page,
docs/asyncapi.md; tests/test_asyncapi.py holds both equal to what this module generates, and
tests/test_deploy_artifacts.py validates the YAML against the AsyncAPI 3.0 schema."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from a2amesh import mqtt_base, tracing
from a2amesh.binding.wire import MAX_PACKET_BYTES, STREAMING_METHODS
from a2amesh.models import (
    AgentCard,
    CancelTaskRequest,
    GetTaskRequest,
    ListTasksRequest,
    ListTasksResponse,
    SendMessageRequest,
    SendMessageResponse,
    StreamResponse,
    SubscribeToTaskRequest,
    Task,
    TaskOwnerRecords,
)
from a2amesh.models.jsonrpc import JsonRpcErrorBody
from a2amesh.topics import AgentAddress, PoolAddress

ASYNCAPI_VERSION = "3.0.0"
SCHEMAS = "#/components/schemas/"

METHOD_PARAMS: dict[str, type[BaseModel]] = {
    "SendMessage": SendMessageRequest,
    "SendStreamingMessage": SendMessageRequest,
    "GetTask": GetTaskRequest,
    "CancelTask": CancelTaskRequest,
    "SubscribeToTask": SubscribeToTaskRequest,
    "ListTasks": ListTasksRequest,
}
"""The JSON-RPC methods a request carries, with the model of their params (A2A v1.0 method names)."""

RESULTS: tuple[type[BaseModel], ...] = (StreamResponse, SendMessageResponse, Task, ListTasksResponse)
"""What a reply's `result` holds: a stream event (streaming methods), a SendMessage result, a task, a page."""

_PLACEHOLDERS = {"ORG": "org", "UNIT": "unit", "AGENT": "agent", "SUFFIX": "suffix", "POOL": "pool"}


def _templated(topic: str) -> str:
    """A topic built by `a2amesh.topics` for placeholder ids, with each placeholder turned into `{parameter}`."""
    return "/".join(f"{{{_PLACEHOLDERS[part]}}}" if part in _PLACEHOLDERS else part for part in topic.split("/"))


_AGENT = AgentAddress("ORG", "UNIT", "AGENT")
_POOL = PoolAddress("ORG", "UNIT", "POOL")


@dataclass(frozen=True)
class UserProperty:
    """One MQTT 5 user property the mesh reads or writes, documented as a message header."""

    name: str
    description: str
    schema: dict[str, Any] = field(default_factory=lambda: {"type": "string"})


STATUS = UserProperty(
    mqtt_base.STATUS_PROPERTY, "Whether the agent is reachable; absent means online.", {"enum": ["online", "offline"]}
)
STATUS_SOURCE = UserProperty(
    mqtt_base.STATUS_SOURCE_PROPERTY,
    "Who set the status: the agent itself, its Last Will (the broker saw it vanish), or the broker.",
    {"enum": ["agent", "lwt", "broker"]},
)
LOAD = UserProperty(
    mqtt_base.LOAD_PROPERTY,
    "The agent's in-flight tasks per concurrent slot, as a decimal (0 idle, 1 saturated, above 1 queueing).",
    {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?$"},
)
AUTHORIZATION = UserProperty(mqtt_base.AUTHORIZATION_PROPERTY, "`Bearer <token>` when the agent requires a token.")
RESPONDER = UserProperty(
    mqtt_base.RESPONDER_PROPERTY, "On a pool reply: the member that answered (org/unit/agent), to address it directly."
)
EVENT_ID = UserProperty(
    mqtt_base.EVENT_ID_PROPERTY, "A unique id per event, by which the task store recognises a redelivered one."
)
TASK_AGENT = UserProperty(
    mqtt_base.TASK_AGENT_PROPERTY,
    "On an event the coordinator records for another agent: that agent's address (org/unit/agent).",
)
TRACEPARENT = UserProperty(
    tracing.TRACEPARENT,
    "W3C Trace Context `traceparent` of the span that published the message (`version-traceid-parentid-flags`), "
    "when tracing is on and the message is a hop of a traced task; a message without it starts a trace of its own.",
    {"type": "string", "pattern": r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"},
)
TRACESTATE = UserProperty(
    tracing.TRACESTATE,
    "W3C Trace Context `tracestate`: vendor-specific trace data travelling with `traceparent`, when there is any.",
)
TRACE_CONTEXT = (TRACEPARENT, TRACESTATE)
"""The W3C "Trace Context: MQTT" user properties (a2amesh.tracing) on every request, reply and task event."""


def _headers(properties: Iterable[UserProperty]) -> dict[str, Any]:
    return {
        "type": "object",
        "description": "MQTT 5 user properties.",
        "properties": {p.name: {**p.schema, "description": p.description} for p in properties},
    }


def _parameters(topic: str) -> dict[str, Any]:
    descriptions = {
        "org": "Organisation id.",
        "unit": "Unit id within the organisation.",
        "agent": "Agent id within the unit.",
        "suffix": "An unguessable suffix naming one reply inbox of the requester.",
        "pool": "Pool id within the unit.",
    }
    names = [part[1:-1] for part in topic.split("/") if part.startswith("{")]
    return {name: {"description": descriptions[name]} for name in names}


def _schemas() -> dict[str, Any]:
    """Every payload model's JSON schema, its nested models shared under components/schemas."""
    models = [AgentCard, StreamResponse, TaskOwnerRecords, JsonRpcErrorBody, *METHOD_PARAMS.values(), *RESULTS]
    unique = list(dict.fromkeys(models))
    _, top = models_json_schema(
        [(model, "validation") for model in unique], ref_template=SCHEMAS + "{model}", by_alias=True
    )
    schemas: dict[str, Any] = dict(sorted(top.get("$defs", {}).items()))
    ids = {"anyOf": [{"type": "string"}, {"type": "integer"}, {"type": "null"}]}
    schemas["JsonRpcRequest"] = {
        "description": "A JSON-RPC 2.0 request: an A2A method and its params.",
        "oneOf": [
            {
                "type": "object",
                "title": method,
                "required": ["jsonrpc", "method", "params"],
                "additionalProperties": False,
                "properties": {
                    "jsonrpc": {"const": "2.0"},
                    "id": ids,
                    "method": {"const": method},
                    "params": {"$ref": SCHEMAS + model.__name__},
                },
            }
            for method, model in METHOD_PARAMS.items()
        ],
    }
    schemas["JsonRpcResponse"] = {
        "description": "A JSON-RPC 2.0 response: exactly one of result or error.",
        "type": "object",
        "required": ["jsonrpc", "id"],
        "properties": {
            "jsonrpc": {"const": "2.0"},
            "id": ids,
            "result": {"anyOf": [{"$ref": SCHEMAS + model.__name__} for model in RESULTS]},
            "error": {"$ref": SCHEMAS + "JsonRpcErrorBody"},
        },
        "oneOf": [{"required": ["result"]}, {"required": ["error"]}],
    }
    return schemas


def _message(name: str, title: str, summary: str, payload: str, headers: Iterable[UserProperty], **mqtt5: Any):
    message: dict[str, Any] = {
        "name": name,
        "title": title,
        "summary": summary,
        "contentType": mqtt_base.JSON,
        "payload": {"$ref": SCHEMAS + payload},
    }
    headers = list(headers)
    if headers:
        message["headers"] = _headers(headers)
    message["bindings"] = {"mqtt": {"contentType": mqtt_base.JSON, **mqtt5, "bindingVersion": "0.2.0"}}
    return message


def _correlated() -> dict[str, Any]:
    return {
        "correlationData": {"type": "string", "format": "binary", "description": "Echoed on every reply."},
        "responseTopic": {"type": "string", "description": "The requester's reply inbox (a reply channel)."},
    }


def document() -> dict[str, Any]:
    """The whole AsyncAPI document, as plain data."""
    topics = {
        "discovery": _templated(_AGENT.discovery_topic),
        "request": _templated(_AGENT.request_topic),
        "reply": _templated(_AGENT.reply_topic("SUFFIX")),
        "event": _templated(_AGENT.event_topic),
        "owner": _templated(_AGENT.owner_topic),
        "pool": _templated(_POOL.topic),
    }
    card = _message(
        "AgentCard",
        "Agent Card",
        "An agent's retained card; an empty retained payload clears it (the agent is gone).",
        "AgentCard",
        [STATUS, STATUS_SOURCE, LOAD],
    )
    request = _message(
        "Request",
        "JSON-RPC request",
        f"An A2A method call. {', '.join(sorted(STREAMING_METHODS))} answer with a stream of replies.",
        "JsonRpcRequest",
        [AUTHORIZATION, *TRACE_CONTEXT],
        **_correlated(),
    )
    reply = _message(
        "Reply",
        "JSON-RPC response",
        "One reply to a request, carrying its correlation data.",
        "JsonRpcResponse",
        [RESPONDER, *TRACE_CONTEXT],
        correlationData=_correlated()["correlationData"],
    )
    event = _message(
        "TaskEvent",
        "Task event",
        "One task event (a task, status update, artifact update or message), as an A2A StreamResponse.",
        "StreamResponse",
        [EVENT_ID, TASK_AGENT, *TRACE_CONTEXT],
    )
    owners = _message(
        "TaskOwners",
        "Task owners",
        "The owners (principal and tenant) of the tasks a coordinator accepted, batched.",
        "TaskOwnerRecords",
        [],
    )
    descriptions = {
        "discovery": "Retained Agent Cards, one per agent (A2A over MQTT profile, discovery).",
        "request": "Requests to one agent.",
        "reply": "A requester's reply inbox; only its owner may subscribe.",
        "event": "The agent's task events: the mesh's durable record, consumed by the task store.",
        "owner": (
            "Who created each task a coordinator accepted ({agent} is the coordinator): only coordinators publish, "
            "only the task store reads, and scopes every read of the task to that owner."
        ),
        "pool": (
            "Requests to a pool of interchangeable agents, consumed through the shared subscription "
            f"`{_templated(_POOL.shared_subscription)}` (Mosquitto shares no `$` topics, hence no `$` prefix)."
        ),
    }
    messages = {
        "discovery": card,
        "request": request,
        "reply": reply,
        "event": event,
        "owner": owners,
        "pool": request,
    }
    channels = {
        name: {
            "address": topic,
            "description": descriptions[name],
            "parameters": _parameters(topic),
            "messages": {messages[name]["name"]: {"$ref": f"#/components/messages/{messages[name]['name']}"}},
        }
        for name, topic in topics.items()
    }

    def operation(action: str, channel: str, summary: str, *, qos: int = 1, retain: bool = False, reply: str = ""):
        message = messages[channel]["name"]
        body: dict[str, Any] = {
            "action": action,
            "channel": {"$ref": f"#/channels/{channel}"},
            "summary": summary,
            "messages": [{"$ref": f"#/channels/{channel}/messages/{message}"}],
            "bindings": {"mqtt": {"qos": qos, "retain": retain, "bindingVersion": "0.2.0"}},
        }
        if reply:
            body["reply"] = {
                "channel": {"$ref": f"#/channels/{reply}"},
                "messages": [{"$ref": f"#/channels/{reply}/messages/Reply"}],
            }
        return body

    operations = {
        "publishCard": operation("send", "discovery", "An agent publishes its card, retained.", retain=True),
        "watchCards": operation("receive", "discovery", "The registry indexes every card."),
        "sendRequest": operation("send", "request", "A requester calls one agent.", reply="reply"),
        "serveRequest": operation("receive", "request", "An agent serves a request and replies.", reply="reply"),
        "sendPoolRequest": operation("send", "pool", "A requester calls any member of a pool.", reply="reply"),
        "servePoolRequest": operation("receive", "pool", "One pool member serves the request.", reply="reply"),
        "publishTaskEvent": operation("send", "event", "An agent records a task event."),
        "recordTaskEvents": operation("receive", "event", "The task store records every event once."),
        "publishTaskOwners": operation("send", "owner", "A coordinator records who created the tasks it accepted."),
        "recordTaskOwners": operation("receive", "owner", "The task store records each task's owner once."),
    }
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "A2A mesh over MQTT 5",
            "version": "0.1.0",
            "description": (
                "The MQTT API of the A2A v1.0 mesh: discovery, requests and replies (JSON-RPC 2.0, correlated by "
                "MQTT 5 response topic and correlation data), task events and pools. Generated from the code by "
                f"`make asyncapi`; packets are at most {MAX_PACKET_BYTES} bytes."
            ),
        },
        "defaultContentType": mqtt_base.JSON,
        "servers": {
            "mesh": {
                "host": "broker:8883",
                "protocol": "secure-mqtt",
                "protocolVersion": "5",
                "description": "Mosquitto with TLS client certificates and per-identity ACLs.",
                "security": [{"$ref": "#/components/securitySchemes/clientCertificate"}],
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "schemas": _schemas(),
            "messages": {m["name"]: m for m in (card, request, reply, event, owners)},
            "securitySchemes": {
                "clientCertificate": {
                    "type": "X509",
                    "description": "Every client presents a certificate from the mesh's CA, and a password.",
                }
            },
        },
    }


def to_yaml(data: dict[str, Any]) -> str:
    return "# Generated by `make asyncapi` (devstack.asyncapi): do not edit.\n" + yaml.safe_dump(
        data, sort_keys=False, allow_unicode=True, width=120
    )


def to_markdown(data: dict[str, Any]) -> str:
    """A readable page of the document: servers, channels with their messages, operations, and payload schemas."""
    lines = [
        "<!-- Generated by `make asyncapi` (devstack.asyncapi) with docs/asyncapi.yaml: do not edit. -->",
        f"# {data['info']['title']} (AsyncAPI {data['asyncapi']})",
        "",
        data["info"]["description"],
        "",
        "## Servers",
        "",
    ]
    for name, server in data["servers"].items():
        lines.append(
            f"- **{name}**: `{server['protocol']}://{server['host']}` (MQTT {server['protocolVersion']}): "
            f"{server['description']}"
        )
    lines += ["", "## Channels", ""]
    messages = data["components"]["messages"]
    for name, channel in data["channels"].items():
        lines += [f"### {name}: `{channel['address']}`", "", channel["description"], ""]
        for key in channel["messages"]:
            message = messages[key]
            payload = message["payload"]["$ref"].removeprefix(SCHEMAS)
            summary = f"Message **{message['title']}**: {message['summary']}"
            lines.append(f"{summary} Payload: `{payload}` ({message['contentType']}).")
            for header, schema in message.get("headers", {}).get("properties", {}).items():
                lines.append(f"- user property `{header}`: {schema['description']}")
            for field_name in ("responseTopic", "correlationData"):
                if field_name in message["bindings"]["mqtt"]:
                    lines.append(f"- MQTT 5 `{field_name}`: {message['bindings']['mqtt'][field_name]['description']}")
            lines.append("")
    lines += [
        "## Operations",
        "",
        "| operation | action | channel | QoS | retained | reply on |",
        "|---|---|---|---|---|---|",
    ]
    for name, op in data["operations"].items():
        reply = op.get("reply", {}).get("channel", {}).get("$ref", "").removeprefix("#/channels/")
        binding = op["bindings"]["mqtt"]
        channel = op["channel"]["$ref"].removeprefix("#/channels/")
        lines.append(f"| {name} | {op['action']} | {channel} | {binding['qos']} | {binding['retain']} | {reply} |")
    lines += ["", "## Payload schemas", ""]
    for name, schema in data["components"]["schemas"].items():
        lines += [f"### {name}", "", "```json", json.dumps(schema, indent=2), "```", ""]
    return "\n".join(lines)


def write(directory: Path) -> list[Path]:
    """Write asyncapi.yaml and asyncapi.md into `directory`; returns their paths."""
    data = document()
    targets = {directory / "asyncapi.yaml": to_yaml(data), directory / "asyncapi.md": to_markdown(data)}
    for path, text in targets.items():
        path.write_text(text)
    return list(targets)


if __name__ == "__main__":
    import sys

    for written in write(Path(sys.argv[1] if len(sys.argv) > 1 else "docs")):
        print(f"wrote {written}")
