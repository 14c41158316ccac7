"""Hypothesis strategies for the A2A v1.0 conformance tests.

Two independent sources of examples:

* `ours.*` build instances of our pydantic models (a2amesh.models), field by field, the way mesh code builds them.
* `proto_json(descriptor)` builds proto-JSON dicts for any SDK message straight from its protobuf descriptor (field
  types, oneofs, proto3 `optional`, `field_behavior = REQUIRED`), knowing nothing of our models. Fed through
  `json_format.ParseDict` they give SDK messages, so a field our models lack or misname cannot hide.

JSON numbers are generated so that they survive protobuf's `Value` (a double): finite floats and integers within 2**53.
Timestamps are generated with millisecond precision, the precision the A2A wire (and our models) carry.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta, timezone
from functools import cache
from typing import Any

from google.api import field_behavior_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from hypothesis import strategies as st

from a2amesh.models import (
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
    CancelTaskRequest,
    GetTaskRequest,
    HTTPAuthSecurityScheme,
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
)

# --------------------------------------------------------------------------------------------------------------------
# Shared leaves
# --------------------------------------------------------------------------------------------------------------------

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
JSON_INT_LIMIT = 2**53

any_text = st.text(max_size=10)
"""Any Unicode text, the empty string included (protobuf strings are UTF-8; hypothesis never makes surrogates)."""
some_text = st.text(min_size=1, max_size=10)
"""Non-empty text: for fields the spec marks REQUIRED (an empty proto3 string is indistinguishable from absent)."""
int32s = st.integers(INT32_MIN, INT32_MAX)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-JSON_INT_LIMIT, JSON_INT_LIMIT)
    | st.floats(allow_nan=False, allow_infinity=False)
    | any_text
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(any_text, children, max_size=3),
    max_leaves=8,
)
"""Any JSON value: null, booleans, numbers, strings, and nested arrays and objects of them."""
json_objects = st.dictionaries(any_text, json_values, max_size=3)

# google.protobuf.Timestamp spans 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59.999999999Z.
TIMESTAMP_MIN = datetime(1, 1, 1)
TIMESTAMP_MAX = datetime(9999, 12, 31, 23, 59, 59, 999000)
_ZONES = [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))]

utc_millis = st.datetimes(min_value=TIMESTAMP_MIN, max_value=TIMESTAMP_MAX).map(
    lambda value: value.replace(microsecond=value.microsecond // 1000 * 1000, tzinfo=UTC)
)
"""Aware UTC datetimes at millisecond precision over protobuf's whole Timestamp range."""
any_datetimes = utc_millis | st.datetimes(
    min_value=datetime(1, 1, 2),
    max_value=datetime(9999, 12, 30),
    timezones=st.none() | st.sampled_from(_ZONES),
)
"""What mesh code may hand our models: UTC at ms precision, or microseconds, other offsets, naive (read as UTC)."""


def optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """The strategy, or None (the field left unset)."""
    return st.none() | strategy


def _kwargs(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Keyword arguments drawn field by field; a None draw leaves the field unset."""
    return st.fixed_dictionaries(fields).map(lambda drawn: {k: v for k, v in drawn.items() if v is not None})


def _model(cls: type, **fields: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return _kwargs(**fields).map(lambda kwargs: cls(**kwargs))


# --------------------------------------------------------------------------------------------------------------------
# Our models
# --------------------------------------------------------------------------------------------------------------------


class ours:
    """Strategies for instances of our pydantic models."""

    # -- parts, messages, tasks ---------------------------------------------------------------------------------------

    part_contents: dict[str, st.SearchStrategy[dict[str, Any]]] = {
        "text": st.builds(lambda value: {"text": value}, any_text),
        "raw": st.builds(lambda value: {"raw": value}, st.binary(max_size=24)),
        "url": st.builds(lambda value: {"url": value}, any_text),
        # `data` is any JSON value, null included: it is passed explicitly so the model knows it was set.
        "data": st.builds(lambda value: {"data": value}, json_values),
    }

    @staticmethod
    def parts_of(kind: str) -> st.SearchStrategy[Part]:
        """Parts carrying the given content kind, with or without filename, media type and metadata."""
        return st.builds(
            lambda content, extras: Part(**content, **extras),
            ours.part_contents[kind],
            _kwargs(filename=optional(any_text), media_type=optional(any_text), metadata=optional(json_objects)),
        )

    parts: st.SearchStrategy[Part] = st.deferred(lambda: st.one_of(*(ours.parts_of(k) for k in ours.part_contents)))
    part_lists = st.deferred(lambda: st.lists(ours.parts, max_size=3))
    string_lists = st.lists(any_text, max_size=3)

    messages: st.SearchStrategy[Message] = st.deferred(
        lambda: _model(
            Message,
            message_id=some_text,
            context_id=optional(any_text),
            task_id=optional(any_text),
            role=st.sampled_from(Role),
            parts=ours.part_lists,
            metadata=optional(json_objects),
            extensions=optional(ours.string_lists),
            reference_task_ids=optional(ours.string_lists),
        )
    )
    task_states = st.sampled_from(TaskState)
    statuses: st.SearchStrategy[TaskStatus] = st.deferred(
        lambda: _model(
            TaskStatus, state=ours.task_states, message=optional(ours.messages), timestamp=optional(any_datetimes)
        )
    )
    artifacts: st.SearchStrategy[Artifact] = st.deferred(
        lambda: _model(
            Artifact,
            artifact_id=some_text,
            name=optional(any_text),
            description=optional(any_text),
            parts=ours.part_lists,
            metadata=optional(json_objects),
            extensions=optional(ours.string_lists),
        )
    )
    tasks: st.SearchStrategy[Task] = st.deferred(
        lambda: _model(
            Task,
            id=some_text,
            context_id=optional(any_text),
            status=ours.statuses,
            artifacts=optional(st.lists(ours.artifacts, max_size=2)),
            history=optional(st.lists(ours.messages, max_size=2)),
            metadata=optional(json_objects),
        )
    )
    status_updates: st.SearchStrategy[TaskStatusUpdateEvent] = st.deferred(
        lambda: _model(
            TaskStatusUpdateEvent,
            task_id=some_text,
            context_id=any_text,
            status=ours.statuses,
            metadata=optional(json_objects),
        )
    )
    artifact_updates: st.SearchStrategy[TaskArtifactUpdateEvent] = st.deferred(
        lambda: _model(
            TaskArtifactUpdateEvent,
            task_id=some_text,
            context_id=any_text,
            artifact=ours.artifacts,
            append=optional(st.booleans()),
            last_chunk=optional(st.booleans()),
            metadata=optional(json_objects),
        )
    )
    stream_payloads: dict[str, st.SearchStrategy[Any]] = {
        "task": st.deferred(lambda: ours.tasks),
        "message": st.deferred(lambda: ours.messages),
        "status_update": st.deferred(lambda: ours.status_updates),
        "artifact_update": st.deferred(lambda: ours.artifact_updates),
    }

    @staticmethod
    def stream_responses_of(kind: str) -> st.SearchStrategy[StreamResponse]:
        return ours.stream_payloads[kind].map(lambda payload: StreamResponse(**{kind: payload}))

    stream_responses: st.SearchStrategy[StreamResponse] = st.deferred(
        lambda: st.one_of(*(ours.stream_responses_of(k) for k in ours.stream_payloads))
    )

    # -- requests and responses ---------------------------------------------------------------------------------------

    authentication = _model(AuthenticationInfo, scheme=some_text, credentials=optional(any_text))
    push_configs: st.SearchStrategy[TaskPushNotificationConfig] = _model(
        TaskPushNotificationConfig,
        tenant=optional(any_text),
        id=optional(any_text),
        task_id=optional(any_text),
        url=some_text,
        token=optional(any_text),
        authentication=optional(authentication),
    )
    send_configurations: st.SearchStrategy[SendMessageConfiguration] = _model(
        SendMessageConfiguration,
        accepted_output_modes=optional(st.lists(any_text, max_size=3)),
        task_push_notification_config=optional(push_configs),
        history_length=optional(int32s),
        return_immediately=optional(st.booleans()),
    )
    send_requests: st.SearchStrategy[SendMessageRequest] = st.deferred(
        lambda: _model(
            SendMessageRequest,
            tenant=optional(any_text),
            message=ours.messages,
            configuration=optional(ours.send_configurations),
            metadata=optional(json_objects),
        )
    )
    send_responses: st.SearchStrategy[SendMessageResponse] = st.deferred(
        lambda: (
            st.builds(lambda task: SendMessageResponse(task=task), ours.tasks)
            | st.builds(lambda message: SendMessageResponse(message=message), ours.messages)
        )
    )
    get_task_requests = _model(GetTaskRequest, tenant=optional(any_text), id=some_text, history_length=optional(int32s))
    list_tasks_requests: st.SearchStrategy[ListTasksRequest] = _model(
        ListTasksRequest,
        tenant=optional(any_text),
        context_id=optional(any_text),
        status=optional(st.sampled_from(TaskState)),
        page_size=optional(int32s),
        page_token=optional(any_text),
        history_length=optional(int32s),
        status_timestamp_after=optional(any_datetimes),
        include_artifacts=optional(st.booleans()),
    )
    list_tasks_responses: st.SearchStrategy[ListTasksResponse] = st.deferred(
        lambda: _model(
            ListTasksResponse,
            tasks=st.lists(ours.tasks, max_size=2),
            next_page_token=any_text,
            page_size=int32s,
            total_size=int32s,
        )
    )
    cancel_requests = _model(
        CancelTaskRequest, tenant=optional(any_text), id=some_text, metadata=optional(json_objects)
    )
    subscribe_requests = _model(SubscribeToTaskRequest, tenant=optional(any_text), id=some_text)

    # -- the agent card -----------------------------------------------------------------------------------------------

    scopes = st.dictionaries(any_text, any_text, max_size=3)
    # OAuthFlow is the union of the five flow messages: each flow gets only the fields its proto message has.
    oauth_flow_fields: dict[str, tuple[str, ...]] = {
        "authorization_code": ("authorization_url", "token_url", "refresh_url", "pkce_required"),
        "client_credentials": ("token_url", "refresh_url"),
        "implicit": ("authorization_url", "refresh_url"),
        "password": ("token_url", "refresh_url"),
        "device_code": ("device_authorization_url", "token_url", "refresh_url"),
    }

    @staticmethod
    def oauth_flows_of(kind: str) -> st.SearchStrategy[OAuthFlows]:
        fields = {
            name: optional(st.booleans() if name == "pkce_required" else any_text)
            for name in ours.oauth_flow_fields[kind]
        }
        flow = _model(OAuthFlow, scopes=ours.scopes, **fields)
        return flow.map(lambda value: OAuthFlows(**{kind: value}))

    security_schemes_by_kind: dict[str, st.SearchStrategy[Any]] = {
        "api_key_security_scheme": _model(
            APIKeySecurityScheme,
            description=optional(any_text),
            location=st.sampled_from(["header", "query", "cookie"]) | some_text,
            name=some_text,
        ),
        "http_auth_security_scheme": _model(
            HTTPAuthSecurityScheme,
            description=optional(any_text),
            scheme=st.sampled_from(["Bearer", "Basic"]) | some_text,
            bearer_format=optional(any_text),
        ),
        "oauth2_security_scheme": st.deferred(
            lambda: _model(
                OAuth2SecurityScheme,
                description=optional(any_text),
                flows=st.one_of(*(ours.oauth_flows_of(k) for k in ours.oauth_flow_fields)),
                oauth2_metadata_url=optional(any_text),
            )
        ),
        "open_id_connect_security_scheme": _model(
            OpenIdConnectSecurityScheme, description=optional(any_text), open_id_connect_url=some_text
        ),
        "mtls_security_scheme": _model(MutualTlsSecurityScheme, description=optional(any_text)),
    }

    @staticmethod
    def security_schemes_of(kind: str) -> st.SearchStrategy[SecurityScheme]:
        return ours.security_schemes_by_kind[kind].map(lambda scheme: SecurityScheme(**{kind: scheme}))

    security_schemes: st.SearchStrategy[SecurityScheme] = st.deferred(
        lambda: st.one_of(*(ours.security_schemes_of(k) for k in ours.security_schemes_by_kind))
    )
    security_requirements = st.builds(
        lambda schemes: SecurityRequirement(schemes={k: StringList(items=v) for k, v in schemes.items()}),
        st.dictionaries(any_text, st.lists(any_text, max_size=3), max_size=3),
    )
    interfaces = _model(
        AgentInterface,
        url=some_text,
        protocol_binding=st.sampled_from(["JSONRPC", "GRPC", "HTTP+JSON", "https://a2a-mqtt.example/binding/v1"])
        | some_text,
        tenant=optional(any_text),
        protocol_version=optional(st.just("1.0") | some_text),
    )
    providers = _model(AgentProvider, url=some_text, organization=some_text)
    extensions = _model(
        AgentExtension,
        uri=some_text,
        description=optional(any_text),
        required=optional(st.booleans()),
        params=optional(json_objects),
    )
    capabilities = _model(
        AgentCapabilities,
        streaming=optional(st.booleans()),
        push_notifications=optional(st.booleans()),
        extensions=optional(st.lists(extensions, max_size=2)),
        extended_agent_card=optional(st.booleans()),
    )
    skills = _model(
        AgentSkill,
        id=some_text,
        name=some_text,
        description=some_text,
        tags=st.lists(any_text, max_size=3),
        examples=optional(st.lists(any_text, max_size=2)),
        input_modes=optional(st.lists(any_text, max_size=2)),
        output_modes=optional(st.lists(any_text, max_size=2)),
        security_requirements=optional(st.lists(security_requirements, max_size=2)),
    )
    signatures = _model(AgentCardSignature, protected=some_text, signature=some_text, header=optional(json_objects))
    cards: st.SearchStrategy[AgentCard] = st.deferred(
        lambda: _model(
            AgentCard,
            name=some_text,
            description=some_text,
            supported_interfaces=st.lists(ours.interfaces, min_size=1, max_size=2),
            provider=optional(ours.providers),
            version=some_text,
            documentation_url=optional(any_text),
            capabilities=ours.capabilities,
            security_schemes=optional(st.dictionaries(any_text, ours.security_schemes, max_size=3)),
            security_requirements=optional(st.lists(ours.security_requirements, max_size=2)),
            default_input_modes=st.lists(any_text, max_size=2),
            default_output_modes=st.lists(any_text, max_size=2),
            skills=st.lists(ours.skills, max_size=2),
            signatures=optional(st.lists(ours.signatures, max_size=2)),
            icon_url=optional(any_text),
        )
    )


# --------------------------------------------------------------------------------------------------------------------
# SDK messages, from their descriptors
# --------------------------------------------------------------------------------------------------------------------

STRUCT, VALUE, TIMESTAMP = "google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.Timestamp"

# REQUIRED fields whose empty value is still meaningful, and which our models default rather than demand.
EMPTY_ALLOWED = frozenset(
    {
        "lf.a2a.v1.ListTasksResponse.next_page_token",  # "" on the last page
        "lf.a2a.v1.TaskStatusUpdateEvent.context_id",
        "lf.a2a.v1.TaskArtifactUpdateEvent.context_id",
    }
)


def is_required(field: FieldDescriptor) -> bool:
    """Whether the proto marks the field `(google.api.field_behavior) = REQUIRED`."""
    return field_behavior_pb2.REQUIRED in field.GetOptions().Extensions[field_behavior_pb2.field_behavior]


def is_synthetic_oneof(field: FieldDescriptor) -> bool:
    """Whether the field's oneof is the synthetic one proto3 `optional` creates (not a real choice)."""
    oneof = field.containing_oneof
    return oneof is not None and len(oneof.fields) == 1 and oneof.name == f"_{field.name}"


def is_map(field: FieldDescriptor) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


def timestamp_text(value: datetime) -> str:
    """RFC 3339 the way protobuf's JSON mapping writes a Timestamp (four-digit year, `Z`)."""
    return value.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


def _single(field: FieldDescriptor, non_empty: bool) -> st.SearchStrategy[Any]:
    """One (non-repeated) value of the field's type, in proto-JSON form."""
    kind = field.type
    if kind == FieldDescriptor.TYPE_STRING:
        return some_text if non_empty else any_text
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind in (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_SFIXED32):
        return int32s
    if kind == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=24).map(lambda raw: base64.b64encode(raw).decode("ascii"))
    if kind == FieldDescriptor.TYPE_ENUM:
        names = [v.name for v in field.enum_type.values if not (non_empty and v.number == 0)]
        return st.sampled_from(names)
    if kind == FieldDescriptor.TYPE_MESSAGE:
        return proto_json(field.message_type)
    raise NotImplementedError(f"no strategy for {field.full_name} (type {kind})")


def _field(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    non_empty = is_required(field) and field.full_name not in EMPTY_ALLOWED
    if is_map(field):
        key, value = field.message_type.fields_by_name["key"], field.message_type.fields_by_name["value"]
        return st.dictionaries(_single(key, False), _single(value, False), max_size=2)
    if field.is_repeated:
        return st.lists(_single(field, False), min_size=1 if non_empty else 0, max_size=2)
    return _single(field, non_empty)


def _merge(parts: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for part in parts:
        merged.update(part)
    return merged


@cache
def proto_json(descriptor: Descriptor, choose: tuple[tuple[str, str], ...] = ()) -> st.SearchStrategy[dict[str, Any]]:
    """Proto-JSON dicts (camelCase keys) for the message: a valid instance as the spec describes it.

    REQUIRED fields are always present and non-empty; other fields may be absent, present with their default, or set.
    Each real oneof carries exactly one member (the spec's "exactly one of"); `choose` pins a oneof to one member,
    as `(("content", "raw"),)`. Well-known types get JSON values, objects and millisecond timestamps.
    """
    if descriptor.full_name == STRUCT:
        return json_objects
    if descriptor.full_name == VALUE:
        return json_values
    if descriptor.full_name == TIMESTAMP:
        return utc_millis.map(timestamp_text)
    pinned = dict(choose)
    mandatory: dict[str, st.SearchStrategy[Any]] = {}
    maybe: dict[str, st.SearchStrategy[Any]] = {}
    for field in descriptor.fields:
        if field.containing_oneof is not None and not is_synthetic_oneof(field):
            continue
        if is_required(field) and field.full_name not in EMPTY_ALLOWED:
            mandatory[field.json_name] = _field(field)
        else:
            maybe[field.json_name] = _field(field)
    pieces = [st.fixed_dictionaries(mandatory, optional=maybe)]
    for oneof in descriptor.oneofs:
        members = [f for f in oneof.fields if not is_synthetic_oneof(f)]
        if not members:
            continue
        if oneof.name in pinned:
            members = [f for f in members if f.name == pinned[oneof.name]]
            assert members, f"{descriptor.full_name}.{oneof.name} has no member {pinned[oneof.name]}"
        pieces.append(st.one_of(*(st.fixed_dictionaries({f.json_name: _field(f)}) for f in members)))
    return st.tuples(*pieces).map(_merge)
