"""Our A2A v1.0 models against the official SDK's protobuf types (`a2a.types.a2a_pb2`, package `lf.a2a.v1`).

Property tests, in both directions, for every model the mesh sends:

* ours -> SDK: an instance of our model, written with `to_wire()`, is accepted by strict `json_format.ParseDict`
  (unknown fields are errors), and what the SDK writes back (`MessageToDict`) reads into an equal model.
* SDK -> ours: a valid SDK message (built from its descriptor, see strategies.proto_json) reads into our model,
  and our `to_wire()` parses back into a message `==` the original.

Then structural checks (every proto field has a counterpart of the same JSON name, and we require nothing the spec
leaves optional) and targeted tests: enum names, camelCase keys, unknown fields, oneof rules, timestamps, bytes,
int32 bounds and the JSON-RPC envelope helpers. The number of examples each property ran is printed at the end of the
run (see conftest.py).
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from a2a.server.request_handlers.response_helpers import build_error_response
from a2a.types import a2a_pb2 as pb
from a2a.utils import errors as sdk_errors
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message as ProtoMessage
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from a2amesh.models import (
    INTERRUPTED_STATES,
    TERMINAL_STATES,
    A2AModel,
    AgentCapabilities,
    AgentCard,
    AgentCardSignature,
    AgentExtension,
    AgentInterface,
    AgentProvider,
    AgentSkill,
    APIKeySecurityScheme,
    Artifact,
    AuthenticationInfo,
    BindingError,
    CancelTaskRequest,
    ErrorCode,
    GetTaskRequest,
    HTTPAuthSecurityScheme,
    JsonRpcErrorBody,
    JsonRpcResponse,
    ListTasksRequest,
    ListTasksResponse,
    Message,
    MutualTlsSecurityScheme,
    OAuth2SecurityScheme,
    OAuthFlow,
    OAuthFlows,
    OpenIdConnectSecurityScheme,
    Part,
    Role,
    SecurityRequirement,
    SecurityScheme,
    SendMessageConfiguration,
    SendMessageRequest,
    SendMessageResponse,
    StreamResponse,
    StringList,
    SubscribeToTaskRequest,
    Task,
    TaskArtifactUpdateEvent,
    TaskPushNotificationConfig,
    TaskState,
    TaskStatus,
    TaskStatusUpdateEvent,
    a2a_error_info,
    binding_error_response,
    error_response,
    result_response,
)

from .strategies import (
    STRUCT,
    TIMESTAMP,
    VALUE,
    is_map,
    is_required,
    json_values,
    ours,
    proto_json,
)

# ---------------------------------------------------------------------------------------------------------------------
# What is compared with what
# ---------------------------------------------------------------------------------------------------------------------

# (our model, SDK message, strategy for our instances, examples per direction). Budgets are sized so the whole file
# runs in a few seconds; the big composite types get more.
WIRE_TYPES: list[tuple[type[A2AModel], type[ProtoMessage], st.SearchStrategy[Any], int]] = [
    (AgentCard, pb.AgentCard, ours.cards, 150),
    (Task, pb.Task, ours.tasks, 120),
    (TaskStatus, pb.TaskStatus, ours.statuses, 60),
    (Message, pb.Message, ours.messages, 100),
    (Part, pb.Part, ours.parts, 100),
    (Artifact, pb.Artifact, ours.artifacts, 60),
    (TaskStatusUpdateEvent, pb.TaskStatusUpdateEvent, ours.status_updates, 60),
    (TaskArtifactUpdateEvent, pb.TaskArtifactUpdateEvent, ours.artifact_updates, 60),
    (StreamResponse, pb.StreamResponse, ours.stream_responses, 120),
    (SendMessageRequest, pb.SendMessageRequest, ours.send_requests, 80),
    (SendMessageConfiguration, pb.SendMessageConfiguration, ours.send_configurations, 60),
    (SendMessageResponse, pb.SendMessageResponse, ours.send_responses, 60),
    (GetTaskRequest, pb.GetTaskRequest, ours.get_task_requests, 40),
    (ListTasksRequest, pb.ListTasksRequest, ours.list_tasks_requests, 60),
    (ListTasksResponse, pb.ListTasksResponse, ours.list_tasks_responses, 60),
    (CancelTaskRequest, pb.CancelTaskRequest, ours.cancel_requests, 40),
    (SubscribeToTaskRequest, pb.SubscribeToTaskRequest, ours.subscribe_requests, 30),
    (TaskPushNotificationConfig, pb.TaskPushNotificationConfig, ours.push_configs, 40),
    (SecurityScheme, pb.SecurityScheme, ours.security_schemes, 60),
]
WIRE_IDS = [model.__name__ for model, *_ in WIRE_TYPES]

# Every model with a proto counterpart of the same shape (OAuthFlow, the union of five flow messages, is checked apart).
COUNTERPARTS: list[tuple[type[A2AModel], type[ProtoMessage]]] = [
    (model, message) for model, message, *_ in WIRE_TYPES if model is not SecurityScheme
] + [
    (SecurityScheme, pb.SecurityScheme),
    (AuthenticationInfo, pb.AuthenticationInfo),
    (AgentInterface, pb.AgentInterface),
    (AgentProvider, pb.AgentProvider),
    (AgentCapabilities, pb.AgentCapabilities),
    (AgentExtension, pb.AgentExtension),
    (AgentSkill, pb.AgentSkill),
    (AgentCardSignature, pb.AgentCardSignature),
    (StringList, pb.StringList),
    (SecurityRequirement, pb.SecurityRequirement),
    (APIKeySecurityScheme, pb.APIKeySecurityScheme),
    (HTTPAuthSecurityScheme, pb.HTTPAuthSecurityScheme),
    (OAuth2SecurityScheme, pb.OAuth2SecurityScheme),
    (OpenIdConnectSecurityScheme, pb.OpenIdConnectSecurityScheme),
    (MutualTlsSecurityScheme, pb.MutualTlsSecurityScheme),
    (OAuthFlows, pb.OAuthFlows),
]
OAUTH_FLOW_MESSAGES = [
    pb.AuthorizationCodeOAuthFlow,
    pb.ClientCredentialsOAuthFlow,
    pb.ImplicitOAuthFlow,
    pb.PasswordOAuthFlow,
    pb.DeviceCodeOAuthFlow,
]


def conformance(max_examples: int) -> settings:
    return settings(
        max_examples=max_examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
    )


# ---------------------------------------------------------------------------------------------------------------------
# Comparing wire forms modulo what protobuf's JSON mapping normalises
# ---------------------------------------------------------------------------------------------------------------------


def _is_default(field: FieldDescriptor, value: Any) -> bool:
    if field.type == FieldDescriptor.TYPE_ENUM:
        return value == field.enum_type.values_by_number[0].name
    if field.type == FieldDescriptor.TYPE_BYTES:
        return value == ""
    return value == field.default_value and type(value) is type(field.default_value)


def _strip_value(field: FieldDescriptor, value: Any) -> Any:
    if field.message_type is not None and field.message_type.full_name not in (STRUCT, VALUE, TIMESTAMP):
        return strip_defaults(value, field.message_type)
    return value


def strip_defaults(wire: dict[str, Any], descriptor: Descriptor) -> dict[str, Any]:
    """The wire dict without what proto3 cannot tell from absent: "", false, 0, [] and {} in fields without presence.

    Walks the message's descriptor, so JSON values inside Struct/Value (metadata, data) are left untouched, and a key
    that is not a field of the message fails the comparison loudly.
    """
    fields = {field.json_name: field for field in descriptor.fields}
    stripped: dict[str, Any] = {}
    for key, value in wire.items():
        assert key in fields, f"{key!r} is not a field of {descriptor.full_name}"
        field = fields[key]
        if is_map(field):
            if value:
                value_field = field.message_type.fields_by_name["value"]
                stripped[key] = {k: _strip_value(value_field, v) for k, v in value.items()}
        elif field.is_repeated:
            if value:
                stripped[key] = [_strip_value(field, v) for v in value]
        elif field.has_presence or not _is_default(field, value):
            stripped[key] = _strip_value(field, value)
    return stripped


def _canonical_json(value: Any) -> Any:
    """JSON with every number a float (protobuf's Value holds doubles) and -0.0 as 0.0; booleans stay booleans."""
    if isinstance(value, dict):
        return {key: _canonical_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_canonical_json(item) for item in value]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value) + 0.0
    return value


def comparable(wire: dict[str, Any], descriptor: Descriptor) -> str:
    """A canonical text of a wire dict: equal for two dicts exactly when they mean the same proto message."""
    return json.dumps(_canonical_json(strip_defaults(wire, descriptor)), sort_keys=True, ensure_ascii=False)


def show(message: ProtoMessage) -> str:
    return json.dumps(json_format.MessageToDict(message), sort_keys=True, ensure_ascii=False)


# ---------------------------------------------------------------------------------------------------------------------
# The two directions
# ---------------------------------------------------------------------------------------------------------------------


def check_ours_to_sdk(model: A2AModel, message_type: type[ProtoMessage]) -> None:
    model_type = type(model)
    descriptor = message_type.DESCRIPTOR
    wire = model.to_wire()
    assert json.loads(model.to_json()) == wire, "to_json and to_wire disagree"
    assert model_type.model_validate(wire).to_wire() == wire, "our own wire form does not read back into itself"

    message = json_format.ParseDict(wire, message_type())  # strict: an unknown or misnamed field is an error
    sdk_wire = json_format.MessageToDict(message)
    back = model_type.model_validate(sdk_wire)
    assert comparable(back.to_wire(), descriptor) == comparable(wire, descriptor), (
        f"lost or changed through the SDK:\n ours: {wire}\n  sdk: {sdk_wire}"
    )
    assert json_format.ParseDict(back.to_wire(), message_type()) == message


def check_sdk_to_ours(data: dict[str, Any], model_type: type[A2AModel], message_type: type[ProtoMessage]) -> None:
    message = json_format.ParseDict(data, message_type())
    # Both what the SDK writes (defaults omitted) and what another producer may write (defaults present) must read.
    for written in (json_format.MessageToDict(message), data):
        model = model_type.model_validate(written)
        back = json_format.ParseDict(json.loads(model.to_json()), message_type())
        assert back == message, f"changed through our model:\n  sdk: {show(message)}\n ours: {show(back)}"


@pytest.mark.parametrize(("model_type", "message_type", "strategy", "budget"), WIRE_TYPES, ids=WIRE_IDS)
def test_ours_to_sdk(
    model_type: type[A2AModel],
    message_type: type[ProtoMessage],
    strategy: st.SearchStrategy[Any],
    budget: int,
    example_tally: Counter[str],
) -> None:
    @conformance(budget)
    @given(strategy)
    def prop(model: A2AModel) -> None:
        example_tally[f"ours->sdk {model_type.__name__}"] += 1
        assert isinstance(model, model_type)
        check_ours_to_sdk(model, message_type)

    prop()


@pytest.mark.parametrize(("model_type", "message_type", "strategy", "budget"), WIRE_TYPES, ids=WIRE_IDS)
def test_sdk_to_ours(
    model_type: type[A2AModel],
    message_type: type[ProtoMessage],
    strategy: st.SearchStrategy[Any],
    budget: int,
    example_tally: Counter[str],
) -> None:
    @conformance(budget)
    @given(proto_json(message_type.DESCRIPTOR))
    def prop(data: dict[str, Any]) -> None:
        example_tally[f"sdk->ours {model_type.__name__}"] += 1
        check_sdk_to_ours(data, model_type, message_type)

    prop()


# Every alternative of every oneof, pinned, so none is left to chance.
ONEOF_CASES: list[tuple[str, type[A2AModel], type[ProtoMessage], str, str, st.SearchStrategy[Any]]] = [
    *(("Part", Part, pb.Part, "content", kind, ours.parts_of(kind)) for kind in ours.part_contents),
    *(
        ("StreamResponse", StreamResponse, pb.StreamResponse, "payload", kind, ours.stream_responses_of(kind))
        for kind in ours.stream_payloads
    ),
    *(
        ("SecurityScheme", SecurityScheme, pb.SecurityScheme, "scheme", kind, ours.security_schemes_of(kind))
        for kind in ours.security_schemes_by_kind
    ),
    *(
        ("OAuthFlows", OAuthFlows, pb.OAuthFlows, "flow", kind, ours.oauth_flows_of(kind))
        for kind in ours.oauth_flow_fields
    ),
]


@pytest.mark.parametrize(
    ("name", "model_type", "message_type", "oneof", "kind", "strategy"),
    ONEOF_CASES,
    ids=[f"{name}.{kind}" for name, _, _, _, kind, _ in ONEOF_CASES],
)
def test_each_oneof_alternative(
    name: str,
    model_type: type[A2AModel],
    message_type: type[ProtoMessage],
    oneof: str,
    kind: str,
    strategy: st.SearchStrategy[Any],
    example_tally: Counter[str],
) -> None:
    @conformance(25)
    @given(strategy, proto_json(message_type.DESCRIPTOR, ((oneof, kind),)))
    def prop(model: A2AModel, data: dict[str, Any]) -> None:
        example_tally[f"oneof {name}.{kind} (both ways)"] += 1
        check_ours_to_sdk(model, message_type)
        assert json_format.ParseDict(model.to_wire(), message_type()).WhichOneof(oneof) == kind
        check_sdk_to_ours(data, model_type, message_type)
        assert json_format.ParseDict(data, message_type()).WhichOneof(oneof) == kind

    prop()


# ---------------------------------------------------------------------------------------------------------------------
# Structure: names and required fields against the descriptors
# ---------------------------------------------------------------------------------------------------------------------


def _aliases(model_type: type[BaseModel]) -> dict[str, str]:
    return {field.alias or name: name for name, field in model_type.model_fields.items()}


@pytest.mark.parametrize(("model_type", "message_type"), COUNTERPARTS, ids=[m.__name__ for m, _ in COUNTERPARTS])
def test_field_names_match_the_proto(model_type: type[A2AModel], message_type: type[ProtoMessage]) -> None:
    """Our wire names are exactly the proto's JSON names: nothing missing, nothing extra, nothing misspelt."""
    assert set(_aliases(model_type)) == {field.json_name for field in message_type.DESCRIPTOR.fields}


def test_oauth_flow_is_the_union_of_the_five_flows() -> None:
    names = {field.json_name for message in OAUTH_FLOW_MESSAGES for field in message.DESCRIPTOR.fields}
    assert set(_aliases(OAuthFlow)) == names


@pytest.mark.parametrize(("model_type", "message_type"), COUNTERPARTS, ids=[m.__name__ for m, _ in COUNTERPARTS])
def test_we_require_only_what_the_spec_requires(model_type: type[A2AModel], message_type: type[ProtoMessage]) -> None:
    """A field we cannot do without must be REQUIRED in the proto, or we would reject valid messages from SDK peers."""
    required_by_spec = {field.name for field in message_type.DESCRIPTOR.fields if is_required(field)}
    required_by_us = {name for name, field in model_type.model_fields.items() if field.is_required()}
    assert required_by_us <= required_by_spec


# ---------------------------------------------------------------------------------------------------------------------
# Enums
# ---------------------------------------------------------------------------------------------------------------------


def test_task_states_are_the_proto_states() -> None:
    assert {state.value for state in TaskState} == set(pb.TaskState.keys()) - {"TASK_STATE_UNSPECIFIED"}
    assert len(TaskState) == 8


@pytest.mark.parametrize("state", list(TaskState), ids=lambda s: s.name)
def test_task_state_on_the_wire(state: TaskState) -> None:
    number = pb.TaskState.Value(f"TASK_STATE_{state.name}")  # our member name and the proto name agree
    assert TaskStatus(state=state).to_wire() == {"state": f"TASK_STATE_{state.name}"}
    assert json_format.ParseDict(TaskStatus(state=state).to_wire(), pb.TaskStatus()).state == number
    assert TaskStatus.model_validate(json_format.MessageToDict(pb.TaskStatus(state=number))).state is state
    request = json_format.ParseDict(ListTasksRequest(status=state).to_wire(), pb.ListTasksRequest())
    assert request.status == number


@pytest.mark.parametrize("role", list(Role), ids=lambda r: r.name)
def test_role_on_the_wire(role: Role) -> None:
    number = pb.Role.Value(f"ROLE_{role.name}")
    message = Message(message_id="m", role=role)
    assert message.to_wire() == {"messageId": "m", "role": f"ROLE_{role.name}", "parts": []}
    assert json_format.ParseDict(message.to_wire(), pb.Message()).role == number
    assert Message.model_validate(json_format.MessageToDict(pb.Message(message_id="m", role=number))).role is role
    assert {r.value for r in Role} == set(pb.Role.keys()) - {"ROLE_UNSPECIFIED"}


def test_unspecified_enums_are_not_states() -> None:
    with pytest.raises(ValidationError):
        TaskStatus.model_validate({"state": "TASK_STATE_UNSPECIFIED"})
    with pytest.raises(ValidationError):
        Message.model_validate({"messageId": "m", "role": "ROLE_UNSPECIFIED", "parts": []})
    with pytest.raises(ValidationError):
        TaskStatus.model_validate({"state": "completed"})  # the 0.3 spelling is gone
    # An SDK status without a state writes none, and we refuse it rather than invent one.
    with pytest.raises(ValidationError):
        TaskStatus.model_validate(json_format.MessageToDict(pb.TaskStatus()))
    # In ListTasks, UNSPECIFIED means "no filter".
    assert ListTasksRequest.model_validate({"status": "TASK_STATE_UNSPECIFIED"}).status is None


@pytest.mark.parametrize("state", list(TaskState), ids=lambda s: s.name)
def test_terminal_and_interrupted_states(state: TaskState) -> None:
    terminal = {"COMPLETED", "FAILED", "CANCELED", "REJECTED"}
    interrupted = {"INPUT_REQUIRED", "AUTH_REQUIRED"}
    assert state.is_terminal is (state.name in terminal)
    assert state.is_interrupted is (state.name in interrupted)
    assert state.ends_stream is (state.name in terminal | interrupted)
    assert {s.name for s in TERMINAL_STATES} == terminal
    assert {s.name for s in INTERRUPTED_STATES} == interrupted


# ---------------------------------------------------------------------------------------------------------------------
# camelCase and unknown fields
# ---------------------------------------------------------------------------------------------------------------------


def test_camel_case_keys_on_the_wire() -> None:
    message = Message(
        message_id="m1",
        context_id="c1",
        task_id="t1",
        role=Role.AGENT,
        parts=[Part(raw=b"\x00\xff", filename="a.bin", media_type="application/octet-stream", metadata={"k": 1})],
        reference_task_ids=["t0"],
    )
    assert message.to_wire() == {
        "messageId": "m1",
        "contextId": "c1",
        "taskId": "t1",
        "role": "ROLE_AGENT",
        "parts": [{"raw": "AP8=", "filename": "a.bin", "mediaType": "application/octet-stream", "metadata": {"k": 1}}],
        "referenceTaskIds": ["t0"],
    }
    event = TaskArtifactUpdateEvent(
        task_id="t", context_id="c", artifact=Artifact(artifact_id="a", parts=[]), append=True, last_chunk=False
    )
    assert event.to_wire() == {
        "taskId": "t",
        "contextId": "c",
        "artifact": {"artifactId": "a", "parts": []},
        "append": True,
        "lastChunk": False,
    }
    request = ListTasksRequest(
        status_timestamp_after=datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC), include_artifacts=True
    )
    assert request.to_wire() == {"statusTimestampAfter": "2025-01-02T03:04:05.678Z", "includeArtifacts": True}
    # snake_case is read too (ParseDict accepts proto field names as well).
    assert Message.model_validate({"message_id": "m", "role": "ROLE_USER", "reference_task_ids": ["x"]}) == Message(
        message_id="m", role=Role.USER, reference_task_ids=["x"]
    )


@st.composite
def _with_unknown_fields(draw: st.DrawFn, wire: dict[str, Any], descriptor: Descriptor) -> dict[str, Any]:
    """The wire dict with unknown keys sprinkled into its messages (not into Struct/Value data: those keys are data)."""
    known = {name for field in descriptor.fields for name in (field.json_name, field.name)}
    result: dict[str, Any] = {}
    fields = {field.json_name: field for field in descriptor.fields}
    for key, value in wire.items():
        field = fields[key]
        nested = field.message_type
        if nested is None or nested.full_name in (STRUCT, VALUE, TIMESTAMP):
            result[key] = value
        elif is_map(field):
            value_type = nested.fields_by_name["value"].message_type
            result[key] = (
                value
                if value_type is None
                else {k: draw(_with_unknown_fields(v, value_type)) for k, v in value.items()}
            )
        elif field.is_repeated:
            result[key] = [draw(_with_unknown_fields(item, nested)) for item in value]
        else:
            result[key] = draw(_with_unknown_fields(value, nested))
    unknown = draw(
        st.dictionaries(st.text(min_size=1, max_size=8).filter(lambda k: k not in known), json_values, max_size=2)
    )
    result.update(unknown)
    return result


UNKNOWN_FIELD_CASES = [
    (AgentCard, pb.AgentCard, ours.cards),
    (StreamResponse, pb.StreamResponse, ours.stream_responses),
]


@pytest.mark.parametrize(
    ("model_type", "message_type", "strategy"), UNKNOWN_FIELD_CASES, ids=[m.__name__ for m, *_ in UNKNOWN_FIELD_CASES]
)
def test_unknown_fields_are_ignored(
    model_type: type[A2AModel],
    message_type: type[ProtoMessage],
    strategy: st.SearchStrategy[Any],
    example_tally: Counter[str],
) -> None:
    @conformance(40)
    @given(st.data(), strategy)
    def prop(data: st.DataObject, model: A2AModel) -> None:
        example_tally[f"unknown fields {model_type.__name__}"] += 1
        wire = model.to_wire()
        noisy = data.draw(_with_unknown_fields(wire, message_type.DESCRIPTOR))
        assert model_type.model_validate(noisy).to_wire() == wire
        # ... just as the SDK does when told to (its servers and clients parse leniently).
        lenient = json_format.ParseDict(noisy, message_type(), ignore_unknown_fields=True)
        assert lenient == json_format.ParseDict(wire, message_type())

    prop()


def test_unknown_fields_example() -> None:
    wire = {
        "id": "t1",
        "kind": "task",  # 0.3's discriminator: unknown in 1.0
        "status": {"state": "TASK_STATE_WORKING", "final": True, "timestamp": "2025-01-01T00:00:00Z"},
        "history": [{"messageId": "m", "role": "ROLE_USER", "parts": [{"text": "hi", "kind": "text"}], "x": 1}],
    }
    task = Task.model_validate(wire)
    assert task.to_wire() == {
        "id": "t1",
        "status": {"state": "TASK_STATE_WORKING", "timestamp": "2025-01-01T00:00:00.000Z"},
        "history": [{"messageId": "m", "role": "ROLE_USER", "parts": [{"text": "hi"}]}],
    }
    with pytest.raises(json_format.ParseError):
        json_format.ParseDict(wire, pb.Task())  # the keys really are unknown to the proto


# ---------------------------------------------------------------------------------------------------------------------
# Oneofs: exactly one
# ---------------------------------------------------------------------------------------------------------------------

PART_CONTENTS = {"text": "hello", "raw": "aGVsbG8=", "url": "https://example.com/a.txt", "data": {"a": [1, None]}}


@pytest.mark.parametrize(("first", "second"), list(itertools.combinations(PART_CONTENTS, 2)))
def test_part_with_two_contents_is_rejected(first: str, second: str) -> None:
    wire = {first: PART_CONTENTS[first], second: PART_CONTENTS[second]}
    with pytest.raises(ValidationError, match="exactly one"):
        Part.model_validate(wire)
    with pytest.raises(json_format.ParseError):
        json_format.ParseDict(wire, pb.Part())  # the SDK agrees


def test_part_contents() -> None:
    with pytest.raises(ValidationError):
        Part.model_validate({"filename": "x.txt", "mediaType": "text/plain"})
    with pytest.raises(ValidationError):
        Part.model_validate({"text": "a", "data": None})  # null data is still data
    null = Part.model_validate({"data": None})
    assert null.kind == "data"
    assert null.to_wire() == {"data": None}
    message = json_format.ParseDict(null.to_wire(), pb.Part())
    assert message.WhichOneof("content") == "data"
    assert message.data.WhichOneof("kind") == "null_value"
    assert Part(data=None).to_wire() == {"data": None}
    assert Part(data=[1, "a", {"b": None}]).to_wire() == {"data": [1, "a", {"b": None}]}
    assert Part(text="").to_wire() == {"text": ""}
    assert json_format.MessageToDict(json_format.ParseDict({"text": ""}, pb.Part())) == {"text": ""}


STREAM_PAYLOADS: dict[str, dict[str, Any]] = {
    "task": {"id": "t", "status": {"state": "TASK_STATE_WORKING"}},
    "message": {"messageId": "m", "role": "ROLE_AGENT", "parts": [{"text": "hi"}]},
    "statusUpdate": {"taskId": "t", "contextId": "c", "status": {"state": "TASK_STATE_COMPLETED"}},
    "artifactUpdate": {"taskId": "t", "contextId": "c", "artifact": {"artifactId": "a", "parts": [{"text": "x"}]}},
}


def test_stream_response_with_no_payload_is_rejected() -> None:
    with pytest.raises(ValidationError, match="exactly one"):
        StreamResponse.model_validate({})
    with pytest.raises(ValidationError, match="exactly one"):
        StreamResponse.model_validate({"kind": "task"})
    with pytest.raises(ValidationError, match="exactly one"):
        SendMessageResponse.model_validate({})


@pytest.mark.parametrize(("first", "second"), list(itertools.combinations(STREAM_PAYLOADS, 2)))
def test_stream_response_with_two_payloads_is_rejected(first: str, second: str) -> None:
    wire = {first: STREAM_PAYLOADS[first], second: STREAM_PAYLOADS[second]}
    with pytest.raises(ValidationError, match="exactly one"):
        StreamResponse.model_validate(wire)
    with pytest.raises(json_format.ParseError):
        json_format.ParseDict(wire, pb.StreamResponse())


@pytest.mark.parametrize("kind", list(STREAM_PAYLOADS))
def test_stream_response_payload_names(kind: str) -> None:
    response = StreamResponse.model_validate({kind: STREAM_PAYLOADS[kind]})
    assert list(response.to_wire()) == [kind]
    proto_name = {"task": "task", "message": "message", "statusUpdate": "status_update"}.get(kind, "artifact_update")
    assert json_format.ParseDict(response.to_wire(), pb.StreamResponse()).WhichOneof("payload") == proto_name


def test_send_message_response_with_both_is_rejected() -> None:
    wire = {"task": STREAM_PAYLOADS["task"], "message": STREAM_PAYLOADS["message"]}
    with pytest.raises(ValidationError):
        SendMessageResponse.model_validate(wire)
    with pytest.raises(json_format.ParseError):
        json_format.ParseDict(wire, pb.SendMessageResponse())


def test_security_scheme_and_oauth_flows_carry_one_choice() -> None:
    two_schemes = {"mtlsSecurityScheme": {}, "httpAuthSecurityScheme": {"scheme": "Bearer"}}
    with pytest.raises(ValidationError):
        SecurityScheme.model_validate(two_schemes)
    with pytest.raises(json_format.ParseError):
        json_format.ParseDict(two_schemes, pb.SecurityScheme())
    two_flows = {
        "clientCredentials": {"tokenUrl": "https://idp/token", "scopes": {}},
        "password": {"tokenUrl": "https://idp/token", "scopes": {}},
    }
    with pytest.raises(json_format.ParseError):
        json_format.ParseDict(two_flows, pb.OAuthFlows(), ignore_unknown_fields=True)
    with pytest.raises(ValidationError):
        OAuthFlows.model_validate(two_flows)


# ---------------------------------------------------------------------------------------------------------------------
# Timestamps, bytes, integers
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "wire"),
    [
        (datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC), "2025-06-01T12:00:00.000Z"),
        (datetime(2025, 6, 1, 12, 0, 0, 123999, tzinfo=UTC), "2025-06-01T12:00:00.123Z"),  # truncated, not rounded
        (datetime(2025, 6, 1, 14, 30, 0, 5000, tzinfo=timezone(timedelta(hours=2))), "2025-06-01T12:30:00.005Z"),
        (datetime(2025, 6, 1, 12, 0, 0), "2025-06-01T12:00:00.000Z"),  # naive is read as UTC
        (datetime(1, 1, 1, tzinfo=UTC), "0001-01-01T00:00:00.000Z"),  # protobuf's minimum
        (datetime(999, 12, 31, 23, 59, 59, tzinfo=UTC), "0999-12-31T23:59:59.000Z"),
        (datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), "9999-12-31T23:59:59.999Z"),  # and maximum
    ],
)
def test_timestamps_on_the_wire(value: datetime, wire: str) -> None:
    status = TaskStatus(state=TaskState.WORKING, timestamp=value)
    assert status.to_wire()["timestamp"] == wire
    message = json_format.ParseDict(status.to_wire(), pb.TaskStatus())
    assert json_format.ParseDict({"state": "TASK_STATE_WORKING", "timestamp": wire}, pb.TaskStatus()) == message
    assert TaskStatus.model_validate(json_format.MessageToDict(message)).to_wire() == status.to_wire()


def test_sdk_timestamps_at_full_precision_are_read_and_kept_to_the_millisecond() -> None:
    status = pb.TaskStatus(state=pb.TASK_STATE_WORKING)
    status.timestamp.seconds, status.timestamp.nanos = 1_750_000_000, 123_456_789
    wire = json_format.MessageToDict(status)
    assert wire["timestamp"] == "2025-06-15T15:06:40.123456789Z"
    ours_status = TaskStatus.model_validate(wire)
    assert ours_status.to_wire()["timestamp"] == "2025-06-15T15:06:40.123Z"
    assert json_format.ParseDict(ours_status.to_wire(), pb.TaskStatus()).timestamp.nanos == 123_000_000
    # Timestamps with an offset are legal RFC 3339 for the SDK too, and mean the same instant.
    assert TaskStatus.model_validate(
        {"state": "TASK_STATE_WORKING", "timestamp": "2025-06-15T17:06:40.123+02:00"}
    ).to_wire() == {"state": "TASK_STATE_WORKING", "timestamp": "2025-06-15T15:06:40.123Z"}


def test_raw_bytes_accept_both_base64_alphabets() -> None:
    payload = b"\xfb\xef\xff\xfb"
    for text in ("++//+w==", "--__-w==", "--__-w", "++//+w"):  # standard, URL-safe, unpadded
        part = Part.model_validate({"raw": text})
        assert part.raw == payload
        assert part.to_wire() == {"raw": "++//+w=="}
        assert json_format.ParseDict({"raw": text}, pb.Part()).raw == payload
    with pytest.raises(ValidationError):
        Part.model_validate({"raw": "not base64!"})


@pytest.mark.parametrize(
    ("model_type", "field"),
    [
        (GetTaskRequest, "historyLength"),
        (ListTasksRequest, "pageSize"),
        (ListTasksRequest, "historyLength"),
        (SendMessageConfiguration, "historyLength"),
        (ListTasksResponse, "totalSize"),
    ],
)
def test_int32_fields_stay_in_range(model_type: type[A2AModel], field: str) -> None:
    base: dict[str, Any] = {"id": "t"} if model_type is GetTaskRequest else {}
    for good in (-(2**31), 0, 2**31 - 1):
        assert model_type.model_validate({**base, field: good}).to_wire()[field] == good
    for bad in (2**31, -(2**31) - 1):
        with pytest.raises(json_format.ParseError):
            json_format.ParseDict({**base, field: bad}, getattr(pb, model_type.__name__)())
        with pytest.raises(ValidationError):
            model_type.model_validate({**base, field: bad})


def test_list_tasks_response_writes_its_required_fields() -> None:
    assert ListTasksResponse().to_wire() == {"tasks": [], "nextPageToken": "", "pageSize": 0, "totalSize": 0}
    assert ListTasksResponse.model_validate(json_format.MessageToDict(pb.ListTasksResponse())) == ListTasksResponse()


# ---------------------------------------------------------------------------------------------------------------------
# JSON-RPC envelopes
# ---------------------------------------------------------------------------------------------------------------------


def test_error_codes_match_the_sdk() -> None:
    sdk = {error_type.__name__: code for error_type, code in sdk_errors.JSON_RPC_ERROR_CODE_MAP.items()}
    assert sdk == {
        "TaskNotFoundError": ErrorCode.TASK_NOT_FOUND,
        "TaskNotCancelableError": ErrorCode.TASK_NOT_CANCELABLE,
        "PushNotificationNotSupportedError": ErrorCode.PUSH_NOTIFICATION_NOT_SUPPORTED,
        "UnsupportedOperationError": ErrorCode.UNSUPPORTED_OPERATION,
        "ContentTypeNotSupportedError": ErrorCode.CONTENT_TYPE_NOT_SUPPORTED,
        "InvalidAgentResponseError": ErrorCode.INVALID_AGENT_RESPONSE,
        "ExtendedAgentCardNotConfiguredError": ErrorCode.EXTENDED_CARD_NOT_CONFIGURED,
        "ExtensionSupportRequiredError": ErrorCode.EXTENSION_SUPPORT_REQUIRED,
        "VersionNotSupportedError": ErrorCode.VERSION_NOT_SUPPORTED,
        "InvalidParamsError": ErrorCode.INVALID_PARAMS,
        "InvalidRequestError": ErrorCode.INVALID_REQUEST,
        "MethodNotFoundError": ErrorCode.METHOD_NOT_FOUND,
        "InternalError": ErrorCode.INTERNAL_ERROR,
        "JSONParseError": ErrorCode.PARSE_ERROR,
    }
    assert set(sdk.values()) == {code.value for code in ErrorCode}


def test_error_response_envelope() -> None:
    response = error_response("req-1", ErrorCode.TASK_NOT_FOUND, "Task not found", a2a_error_info("TASK_NOT_FOUND"))
    wire = response.to_wire()
    assert wire == {
        "jsonrpc": "2.0",
        "id": "req-1",
        "error": {
            "code": -32001,
            "message": "Task not found",
            "data": [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "TASK_NOT_FOUND",
                    "domain": "a2a-protocol.org",
                }
            ],
        },
    }
    assert "result" not in wire
    assert JsonRpcResponse.model_validate(wire) == response
    assert response.error is not None and response.error.binding_error is None
    # The same shape the SDK's own JSON-RPC server writes for the same error.
    sdk_wire = build_error_response("req-1", sdk_errors.TaskNotFoundError())
    sdk_response = JsonRpcResponse.model_validate(sdk_wire)
    assert sdk_response.error is not None and sdk_response.error.code == ErrorCode.TASK_NOT_FOUND
    assert [{k: v for k, v in info.items() if k != "metadata"} for info in sdk_response.error.data] == wire["error"][
        "data"
    ]
    assert sdk_response.error.binding_error is None
    # No data: the key is left out; a request id may be a number or null.
    assert error_response(7, ErrorCode.INTERNAL_ERROR, "boom").to_wire() == {
        "jsonrpc": "2.0",
        "id": 7,
        "error": {"code": -32603, "message": "boom"},
    }
    assert error_response(None, ErrorCode.PARSE_ERROR, "bad json").to_wire()["id"] is None


@pytest.mark.parametrize("error", list(BindingError), ids=lambda e: e.name)
def test_binding_error_response(error: BindingError) -> None:
    response = binding_error_response("corr-9", error, "binding trouble")
    wire = response.to_wire()
    assert wire == {
        "jsonrpc": "2.0",
        "id": "corr-9",
        "error": {"code": error.value, "message": "binding trouble", "data": {"a2a_error": error.name.lower()}},
    }
    body = JsonRpcResponse.model_validate(json.loads(json.dumps(wire))).error
    assert body is not None
    assert body.binding_error is error
    assert error.retryable is (error is not BindingError.TRANSPORT_PROTOCOL_ERROR)
    # The same code without the tag is the A2A core error that shares the number, not a binding error.
    assert JsonRpcErrorBody(code=error.value, message="x").binding_error is None
    assert JsonRpcErrorBody(code=error.value, message="x", data=a2a_error_info("X")).binding_error is None
    # A tag with the wrong code, or an unknown tag, is not trusted either.
    other = next(e for e in BindingError if e is not error)
    assert JsonRpcErrorBody(code=other.value, message="x", data={"a2a_error": error.wire_name}).binding_error is None
    assert JsonRpcErrorBody(code=error.value, message="x", data={"a2a_error": "nope"}).binding_error is None


def test_binding_error_codes() -> None:
    assert {e.name: e.value for e in BindingError} == {
        "REQUEST_EXPIRED": -32003,
        "RESPONDER_UNAVAILABLE": -32004,
        "TRANSPORT_PROTOCOL_ERROR": -32005,
    }
    assert [e.wire_name for e in BindingError] == [
        "request_expired",
        "responder_unavailable",
        "transport_protocol_error",
    ]


def test_result_response_envelope() -> None:
    task = Task(id="t", status=TaskStatus(state=TaskState.COMPLETED))
    wire = result_response("r", task.to_wire()).to_wire()
    assert wire == {"jsonrpc": "2.0", "id": "r", "result": {"id": "t", "status": {"state": "TASK_STATE_COMPLETED"}}}
    assert "error" not in wire
    assert result_response(1, None).to_wire() == {"jsonrpc": "2.0", "id": 1, "result": None}
    assert Task.model_validate(JsonRpcResponse.model_validate(wire).result) == task
